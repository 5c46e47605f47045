"""Ask a teacher about simulator states: restore each state, render the teacher's camera, act.

`TeacherLabeler` keeps one ManiSkill env open (state observations + the teacher's camera)
between calls; `label_env_states` is the one-shot form. `rpd cache` uses them to label demo
states and rollouts, and the student trainer uses them for live labels of cache misses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from rpd.data.env_state import get_env_state, set_env_state
from rpd.data.vec_envs import EnvConfig, make_env
from rpd.data.views import robot_proprio, teacher_image
from rpd.teachers.base import Teacher, TeacherBatch, no_images

logger = logging.getLogger(__name__)


class TeacherLabeler:
    """Labels env states of one task with one teacher, keeping its env open between calls.

    The env has `obs_mode="state"` (so the student observation of each state comes for free)
    and renders exactly the teacher's camera (nothing for a teacher that reads simulator
    states, `Teacher.uses_env_state`). Close it with `close()` or use `with`.

    On a batched (GPU) backend, labelling restores and renders `batch_size` states at once in
    an env of that many sub-envs (`batch_env`); on the CPU backend (one sub-env per env) it
    restores and renders them one at a time. Teacher rollouts always use a single env.

    Args:
        teacher: Any registered teacher.
        env_id: The task (the teacher must know an instruction for it).
        batch_size: States per teacher call.
        max_episode_steps: Horizon of the env (rollouts); None keeps the task default.
        sim_backend: As `EnvConfig.sim_backend`.
    """

    def __init__(self, teacher: Teacher, env_id: str, *, batch_size: int = 32,
                 max_episode_steps: int | None = None, sim_backend: str = "auto") -> None:
        self.teacher = teacher
        self.env_id = env_id
        self.batch_size = int(batch_size)
        self.instruction = teacher.spec.instruction(env_id)
        self.cfg = EnvConfig(env_id, obs_mode="state", control_mode=teacher.spec.control_mode,
                             camera=None if teacher.uses_env_state else teacher.spec.camera,
                             max_episode_steps=max_episode_steps, sim_backend=sim_backend)
        self._env: Any = None
        self._batch_env: Any = None

    @property
    def env(self) -> Any:
        """The single env of rollouts and one-state restores (made on first use, reset once)."""
        if self._env is None:
            self._env = make_env(self.cfg)
            self._env.reset(seed=0)
        return self._env

    @property
    def batch_env(self) -> Any:
        """The env labels restore states in: `batch_size` sub-envs on a batched backend, else
        `env` itself (made on first use, reset once)."""
        if self.cfg.resolved_sim_backend == "physx_cpu" or self.batch_size == 1:
            return self.env
        if self._batch_env is None:
            self._batch_env = make_env(self.cfg, num_envs=self.batch_size)
            self._batch_env.reset(seed=0)
        return self._batch_env

    def close(self) -> None:
        for env in (self._env, self._batch_env):
            if env is not None:
                env.close()
        self._env = self._batch_env = None

    def __enter__(self) -> TeacherLabeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the teacher sees ------------------------------------------------------------

    def observe(self, env: Any = None, count: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
        """Teacher inputs in the current state of `env`'s first `count` sub-envs (default:
        `env`, one): (images [count, H, W, 3] u8, proprio [count, P] f32 or None). Proprio
        is `robot_proprio` (joint positions, then velocities), first `proprio_dim` dims. A
        teacher that reads simulator states gets `no_images(count)`."""
        env = self.env if env is None else env
        if self.teacher.uses_env_state:
            image = no_images(count)
        else:
            image = teacher_image(env, self.teacher.spec.camera)[:count]
        p = self.teacher.spec.proprio_dim
        if not p:
            return image, None
        return image, robot_proprio(env)[:count, :p]

    def student_obs(self, env: Any = None, count: int = 1) -> np.ndarray:
        """The student's state observation in the current state of `env`'s first `count`
        sub-envs (default: `env`, one): [count, D] f32."""
        obs = (self.env if env is None else env).unwrapped.get_obs()
        return np.asarray(obs.cpu().numpy() if hasattr(obs, "cpu") else obs, np.float32)[:count]

    def act(self, images: np.ndarray, proprio: np.ndarray | None,
            env_states: np.ndarray | None = None) -> np.ndarray:
        """Teacher actions for stacked inputs (images [N, H, W, 3], proprio [N, P] | None,
        env states [N, S] | None), in calls of `batch_size`: [N, A] f32."""
        out = []
        for i in range(0, len(images), self.batch_size):
            sl = slice(i, i + self.batch_size)
            batch = TeacherBatch(images=images[sl],
                                 instructions=[self.instruction] * len(images[sl]),
                                 proprio=None if proprio is None else proprio[sl],
                                 env_states=None if env_states is None else env_states[sl])
            out.append(np.asarray(self.teacher.act(batch), np.float32))
        if not out:
            return np.zeros((0, self.teacher.spec.action_dim), np.float32)
        return np.concatenate(out)

    def label_frames(self, images: np.ndarray, proprio: np.ndarray,
                     env_states: np.ndarray) -> np.ndarray:
        """Teacher actions for frames already rendered at the teacher's camera (a pixel
        student's own frames, `rpd.labels.protocol.FrameLabeller`): nothing is restored or
        rendered. images [N, H, W, 3] u8, proprio [N, P'] f32 (`robot_proprio`, P' ≥ the
        teacher's `proprio_dim`), env states [N, S] -> [N, A] f32."""
        p = self.teacher.spec.proprio_dim
        return self.act(images, proprio[:, :p] if p else None,
                        self._states_for_teacher(env_states))

    # ---- labelling --------------------------------------------------------------------------

    def label_env_states(self, env_states: np.ndarray) -> np.ndarray:
        """Teacher actions for simulator states.

        Args:
            env_states: [N, S] flat states from `rpd.data.env_state.get_env_state`.

        Returns:
            [N, A] float32 teacher actions in env units (NaN/inf passed through as returned).
        """
        return self.label_with_obs(env_states)[0]

    def label_with_obs(self, env_states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `label_env_states`, also returning the student observation of each state.

        Returns:
            (actions [N, A] f32, obs [N, D] f32).
        """
        env_states = np.asarray(env_states, np.float32)
        if env_states.ndim != 2:
            raise ValueError(f"env_states must be [N, S], got {env_states.shape}")
        env = self.batch_env
        images, proprio, obs = [], [], []
        for states, count in restore_batches(env_states, int(env.unwrapped.num_envs)):
            set_env_state(env, states)
            image, p = self.observe(env, count)
            images.append(image)
            proprio.append(p)
            obs.append(self.student_obs(env, count))
        if not images:
            d = self.student_obs().shape[1]
            return (np.zeros((0, self.teacher.spec.action_dim), np.float32),
                    np.zeros((0, d), np.float32))
        stacked_p = None if proprio[0] is None else np.concatenate(proprio)
        actions = self.act(np.concatenate(images), stacked_p, self._states_for_teacher(env_states))
        return actions, np.concatenate(obs)

    def _states_for_teacher(self, env_states: np.ndarray) -> np.ndarray | None:
        return env_states if self.teacher.uses_env_state else None

    def states_from_dicts(self, state_dicts: list[dict[str, Any]]) -> np.ndarray:
        """Flat states [N, S] for ManiSkill nested state dicts (as stored in demo .h5 files)."""
        return flat_states(self.env, state_dicts)

    def rollout(self, seed: int, steps: int, noise: float = 0.0,
                rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """One closed-loop teacher episode from `env.reset(seed=seed)`.

        Every visited state is labelled with the teacher's own action; with `noise` > 0 the
        executed action is that plus N(0, noise²) per dim, clipped to the action space (the
        label stays the clean teacher action). Stops at termination/truncation or `steps`.

        Returns:
            dict with env_state [T, S], obs [T, D], teacher_action [T, A], step [T] and
            success (bool, whether the episode succeeded).
        """
        env = self.env
        rng = rng if rng is not None else np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        low, high = env.unwrapped.single_action_space.low, env.unwrapped.single_action_space.high
        states, observations, actions = [], [], []
        success = False
        for _ in range(steps):
            states.append(get_env_state(env))
            observations.append(np.asarray(obs.cpu().numpy() if hasattr(obs, "cpu") else obs,
                                           np.float32))
            image, p = self.observe()
            action = self.act(image, p, self._states_for_teacher(states[-1]))
            actions.append(action)
            executed = action
            if noise > 0:
                executed = action + rng.normal(0.0, noise, size=action.shape).astype(np.float32)
            executed = np.clip(np.nan_to_num(executed), low, high).astype(np.float32)
            obs, _, terminated, truncated, info = env.step(executed)
            success = bool(np.asarray(_np(info.get("success", False))).any())
            if bool(np.asarray(_np(terminated)).any()) or bool(np.asarray(_np(truncated)).any()):
                break
        return dict(env_state=np.concatenate(states), obs=np.concatenate(observations),
                    teacher_action=np.concatenate(actions),
                    step=np.arange(len(states), dtype=np.int32), success=np.asarray(success))


def restore_batches(env_states: np.ndarray, num_envs: int) -> Iterator[tuple[np.ndarray, int]]:
    """[N, S] states in batches for an env of `num_envs` sub-envs: ([num_envs, S], count),
    the last batch padded with copies of its last state (count = the real rows)."""
    for i in range(0, len(env_states), num_envs):
        batch = env_states[i:i + num_envs]
        count = len(batch)
        if count < num_envs:
            batch = np.concatenate([batch, np.repeat(batch[-1:], num_envs - count, axis=0)])
        yield batch, count


def label_env_states(teacher: Teacher, env_id: str, env_states: np.ndarray,
                     batch_size: int = 32) -> np.ndarray:
    """Teacher actions for simulator states, with a fresh env (see `TeacherLabeler`).

    Args:
        teacher: Any registered teacher.
        env_id: The task the states belong to.
        env_states: [N, S] flat states from `rpd.data.env_state.get_env_state`.
        batch_size: States per teacher call.

    Returns:
        [N, A] float32 teacher actions in env units.
    """
    with TeacherLabeler(teacher, env_id, batch_size=batch_size) as labeler:
        return labeler.label_env_states(env_states)


def flat_states(env: Any, state_dicts: list[dict[str, Any]]) -> np.ndarray:
    """Flat states [N, S] (`get_env_state` layout) of ManiSkill nested state dicts, by
    restoring each in `env` (leaves it in the last state)."""
    out = []
    for sd in state_dicts:
        env.unwrapped.set_state_dict(_batched(sd))
        out.append(get_env_state(env))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _np(x: Any) -> Any:
    return x.cpu().numpy() if hasattr(x, "cpu") else x


def _batched(state: Any) -> Any:
    """ManiSkill's set_state_dict wants a leading batch dim on every leaf array."""
    import torch

    if isinstance(state, dict):
        return {k: _batched(v) for k, v in state.items()}
    a = torch.as_tensor(np.asarray(state))
    return a[None] if a.ndim == 1 else a
