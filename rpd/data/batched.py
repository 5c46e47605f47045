"""ManiSkill's batched simulation (GPU: many envs in one process) as a Stable-Baselines3 VecEnv.

`BatchedVecEnv` wraps one ManiSkill env made with `num_envs = N` (`rpd.data.vec_envs.make_env`) and
behaves like rpd's `SubprocVecEnv` path, so the trainer cannot tell them apart:

- a finished env is reset once, after its step, and SB3 gets the true terminal observation in
  `info["terminal_observation"]` (its time-limit bootstrap needs V(s_T), not V(s_0));
- `info["TimeLimit.truncated"]` is set only for envs truncated without terminating;
- no `episode` entry: `VecMonitor` adds one to the infos of envs whose episode ended;
- episode seeds come from the same per-env streams (`rpd.data.seeding.episode_seeds`) and
  `VecEnv.seed(s)` restarts the streams of run seed s, as `SeededResets` does, as does the
  reset option `EPISODE_SEED_STEP` (`VecEnv.set_options`) at its step;
- with `with_env_state`, each step's info carries "env_state" (the terminal state for a finished
  env) and `reset_infos[i]["env_state"]` the state after its reset, as `EnvStateInfo` does.

ManiSkill's own adapter (`mani_skill.vector.wrappers.sb3`) over its auto-resetting vector env
resets finished envs twice, hands SB3 the observation after the reset as the terminal one and
reports an `episode` on every step; this module replaces it. It also runs on the CPU
backend with one env, which is how the test suite checks it against the `SubprocVecEnv` path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from rpd.data.env_state import get_env_state
from rpd.data.seeding import EPISODE_SEED_STEP, TRAIN_SEED_RANGE, episode_seeds


def _np(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def _row(obs: Any, k: int) -> Any:
    """Env k's observation, copied (the batch is then overwritten by the reset)."""
    return {key: v[k].copy() for key, v in obs.items()} if isinstance(obs, dict) else obs[k].copy()


class BatchedVecEnv(VecEnv):
    """An SB3 VecEnv over one batched ManiSkill env (see the module docstring).

    Args:
        env: From `make_env(cfg, num_envs=N)` (any backend; N > 1 needs the GPU one). A pixel
            student's env (`PixelObservation`) returns dict observations.
        seed: Run seed of the episode-seed streams (env k: `episode_seeds(seed, k, start_step)`).
        start_step: Env step the run starts (or resumes) at.
        with_env_state: Put the simulator states in the infos (for RPD's labels).
    """

    def __init__(self, env: Any, seed: int = 0, start_step: int = 0,
                 with_env_state: bool = False) -> None:
        base = env.unwrapped
        space = env.observation_space
        if not hasattr(space, "spaces"):  # a state env's space is batched: [N, D]
            space = base.single_observation_space
        self.env = env  # before VecEnv.__init__, which reads render_mode through get_attr
        super().__init__(base.num_envs, space, base.single_action_space)
        self.start_step = start_step
        self.with_env_state = with_env_state
        self.resets = 0
        """Sub-env resets so far (a finished env counts once)."""
        self._seed = seed
        self._streams = self._make_streams(seed)
        self._actions: np.ndarray | None = None

    def _make_streams(self, seed: int) -> list[np.random.Generator]:
        # one stream per env, plus one (index N) for the seed that re-seeds torch when env 0
        # is not among the envs reset (ManiSkill seeds torch from env 0's episode seed)
        return [episode_seeds(seed, k, self.start_step) for k in range(self.num_envs + 1)]

    def _draw(self, k: int) -> int:
        return int(self._streams[k].integers(*TRAIN_SEED_RANGE))

    # ---- VecEnv API -------------------------------------------------------------------------

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Restart the episode-seed streams of run seed `seed` (SB3's `set_random_seed`)."""
        if seed is not None:
            self._seed = seed
            self._streams = self._make_streams(seed)
        return [seed] * self.num_envs

    def reset(self) -> Any:
        step = next((o[EPISODE_SEED_STEP] for o in self._options
                     if o and EPISODE_SEED_STEP in o), None)
        self._reset_options()
        if step is not None:
            self.start_step = int(step)
            self._streams = self._make_streams(self._seed)
        seeds = [self._draw(k) for k in range(self.num_envs)]
        obs, _ = self.env.reset(seed=seeds)
        self.resets += self.num_envs
        states = get_env_state(self.env) if self.with_env_state else None
        self.reset_infos = [self._reset_info(seeds[k], states, k) for k in range(self.num_envs)]
        return _np(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        obs, reward = _np(obs), _np(reward).astype(np.float32).reshape(-1)
        terminated = _np(terminated).astype(bool).reshape(-1)
        truncated = _np(truncated).astype(bool).reshape(-1)
        done = terminated | truncated
        success = _np(info["success"]).reshape(-1) if "success" in info else None
        states = get_env_state(self.env) if self.with_env_state else None
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for k in range(self.num_envs):
            infos[k]["TimeLimit.truncated"] = bool(truncated[k] and not terminated[k])
            if success is not None:
                infos[k]["success"] = bool(success[k])
            if states is not None:
                infos[k]["env_state"] = states[k]
        finished = np.flatnonzero(done)
        if len(finished):
            for k in finished:
                infos[k]["terminal_observation"] = _row(obs, k)
            new_obs, new_states = self._reset_envs(finished)
            if isinstance(obs, dict):
                for key in obs:
                    obs[key][finished] = new_obs[key][finished]
            else:
                obs[finished] = new_obs[finished]
            for k in finished:
                self.reset_infos[k] = self._reset_info(self._episode_seed(k), new_states, k)
        return obs, reward, done, infos

    def _reset_envs(self, finished: np.ndarray) -> tuple[Any, np.ndarray | None]:
        """Reset the finished envs once, each with the next seed of its own stream."""
        import torch

        base = self.env.unwrapped
        seeds = np.asarray(base._episode_seed, np.int64).reshape(-1).copy()
        if len(seeds) != self.num_envs:
            seeds = np.zeros(self.num_envs, np.int64)
        for k in finished:
            seeds[k] = self._draw(k)
        if 0 not in finished:
            seeds[0] = self._draw(self.num_envs)
        idx = torch.as_tensor(finished, device=base.device)
        obs, _ = self.env.reset(seed=seeds.tolist(), options=dict(env_idx=idx))
        self.resets += len(finished)
        return _np(obs), get_env_state(self.env) if self.with_env_state else None

    def _episode_seed(self, k: int) -> int:
        return int(np.asarray(self.env.unwrapped._episode_seed).reshape(-1)[k])

    def _reset_info(self, seed: int, states: np.ndarray | None, k: int) -> dict[str, Any]:
        info: dict[str, Any] = dict(episode_seed=seed)
        if states is not None:
            info["env_state"] = states[k]
        return info

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env.unwrapped, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env.unwrapped, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self.env.unwrapped, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))
