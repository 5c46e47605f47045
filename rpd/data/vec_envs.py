"""The one place that creates ManiSkill environments.

Everything else in rpd asks this module for environments, so the simulator backend, the
render backend, the camera and the CPU threading rule are decided here once: `make_env` (one
env, batched on the GPU), `make_vec_env` (a Stable-Baselines3 VecEnv of training envs, in
worker processes on the CPU) and `render_states` (simulator states rendered in worker
processes).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from rpd.data.devices import check_sim_backend, cuda_available, limit_cpu_threads
from rpd.data.env_state import EnvStateInfo, set_env_state
from rpd.data.seeding import SeededResets
from rpd.data.tasks import DEFAULT_CONTROL_MODE, get_task
from rpd.data.views import (
    PIXEL_OBS_MODES,
    CameraSpec,
    PixelObservation,
    paint_object,
    robot_proprio,
    shift_camera,
    teacher_image,
)
from rpd.errors import InputError, SetupError

ObsMode = Literal["state", "rgb", "rgb+proprio"]
RewardMode = Literal["normalized_dense", "dense", "sparse"]


@dataclass
class EnvConfig:
    """How to build a ManiSkill environment for rpd.

    Attributes:
        env_id: A task from `rpd.data.tasks.TASKS`.
        obs_mode: Student observation: "state" (flat vector), or a pixel student's dict
            (`PIXEL_OBS_MODES`, see `PixelObservation`) with its frame from `camera`.
        control_mode: ManiSkill controller; the default matches VLA action spaces.
        reward_mode: "normalized_dense" for RL with shaping, "sparse" for success only.
        max_episode_steps: Horizon; None keeps the task default (50 for most tasks). Teachers
            imitating motion-planning demos need ~100 (demos take 60-80 steps).
        camera: The camera the env renders (the teacher's, or a pixel student's), or None
            when nothing needs a view.
        sim_backend: "auto" picks physx_cuda when CUDA is present, else physx_cpu; "cpu" and
            "gpu" (the `--sim-backend` choices) or ManiSkill's own names force one.
    """

    env_id: str
    obs_mode: ObsMode = "state"
    control_mode: str = DEFAULT_CONTROL_MODE
    reward_mode: RewardMode = "normalized_dense"
    max_episode_steps: int | None = None
    camera: CameraSpec | None = None
    sim_backend: str = "auto"

    def __post_init__(self) -> None:
        get_task(self.env_id)
        if self.obs_mode not in ("state", *PIXEL_OBS_MODES):
            raise InputError(f"--obs {self.obs_mode!r}: use 'state', 'rgb' or 'rgb+proprio'")
        if self.obs_mode != "state" and self.camera is None:
            raise InputError(f"--obs {self.obs_mode}: a pixel student needs a camera")
        if self.reward_mode not in ("normalized_dense", "dense", "sparse"):
            raise InputError(
                f"--reward {self.reward_mode!r}: use 'normalized_dense', 'dense' or 'sparse'"
            )
        if self.max_episode_steps is not None and self.max_episode_steps <= 0:
            raise InputError(f"--horizon {self.max_episode_steps}: must be a positive number")
        self.sim_backend = check_sim_backend(self.sim_backend)

    @property
    def resolved_sim_backend(self) -> str:
        """The simulator backend `auto` resolves to on this machine."""
        if self.sim_backend != "auto":
            return self.sim_backend
        return "physx_cuda" if cuda_available() else "physx_cpu"


def make_env(cfg: EnvConfig, *, num_envs: int = 1, render: bool | None = None) -> Any:
    """Create one ManiSkill environment (batched torch API, `num_envs` parallel on GPU).

    Args:
        cfg: The environment configuration.
        num_envs: Parallel sub-environments; >1 needs the GPU backend.
        render: Whether `env.render()` must return images; defaults to "a teacher camera is
            the human render camera".

    Returns:
        The gymnasium env created by `gym.make` (ManiSkill's BaseEnv under wrappers).

    Raises:
        SetupError: No usable Vulkan device (SAPIEN needs one even for state observations).
    """
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the tasks)

    backend = cfg.resolved_sim_backend
    if num_envs > 1 and backend == "physx_cpu":
        raise InputError(
            f"num_envs={num_envs} needs the GPU simulator; on CPU use make_vec_env (subprocesses)"
        )
    if backend == "physx_cpu":
        limit_cpu_threads()
    camera = cfg.camera
    if render is None:
        render = camera is not None and camera.name == "render"
    kwargs: dict[str, Any] = dict(
        obs_mode="state",
        control_mode=cfg.control_mode,
        reward_mode=cfg.reward_mode,
        sim_backend=backend,
        num_envs=num_envs,
        render_mode="rgb_array" if render else None,
    )
    if backend == "physx_cpu":
        kwargs["render_backend"] = "cpu"
    if camera is not None:
        size = dict(width=camera.width, height=camera.height)
        if camera.name == "render":
            kwargs["human_render_camera_configs"] = size
        else:
            kwargs["sensor_configs"] = {camera.name: size}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        env = gym.make(cfg.env_id, **kwargs)
    except AttributeError as e:
        # ManiSkill reads an unknown key of sensor_configs as a setting of every camera
        if camera is not None and "valid attribute of CameraConfig" in str(e):
            option = "--student-camera" if cfg.obs_mode in PIXEL_OBS_MODES else "--camera"
            raise InputError(f"{option} {camera.name!r}: {cfg.env_id} has no such camera; use "
                             "'render' or one of its sensor cameras (e.g. 'base_camera')"
                             ) from None
        raise
    except RuntimeError as e:
        if "vk::" in str(e) or "vulkan" in str(e).lower():
            raise SetupError(
                f"no usable Vulkan device ({e}); SAPIEN needs one even on CPU: run "
                "scripts/setup.sh (installs Mesa's lavapipe; on Debian 12 from bookworm-backports) "
                "or install your NVIDIA driver"
            ) from None
        raise
    if camera is not None and camera.shift_deg:
        shift_camera(env, camera)
    if camera is not None and camera.object_color:
        paint_object(env, camera.object_color)
    if cfg.obs_mode in PIXEL_OBS_MODES:
        env = PixelObservation(env, camera)  # type: ignore[arg-type]
    return env


def _render_state_block(cfg: EnvConfig, env_states: np.ndarray, start: int,
                        ticks: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Worker of `render_states`: (start, rgb [N, H, W, 3] u8, proprio [N, P] f32)."""
    camera = cfg.camera
    assert camera is not None
    env = make_env(replace(cfg, obs_mode="state"))
    try:
        env.reset(seed=0)
        rgb = np.empty((len(env_states), camera.height, camera.width, 3), np.uint8)
        proprio = []
        for i, state in enumerate(env_states):
            set_env_state(env, state)
            rgb[i] = teacher_image(env, camera)[0]
            proprio.append(robot_proprio(env)[0])
            if ticks is not None and (i + 1) % 64 == 0:
                ticks.put(64)
        if ticks is not None and len(env_states) % 64:
            ticks.put(len(env_states) % 64)
        return start, rgb, np.asarray(proprio, np.float32).reshape(len(env_states), -1)
    finally:
        env.close()


def render_states(cfg: EnvConfig, env_states: np.ndarray, workers: int = 1,
                  progress: Callable[[int], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """What a pixel student sees in each of the given simulator states, rendered in
    `workers` spawned processes (one render per state: ≈ 25 ms at 64 px on a CPU core).

    Args:
        cfg: The student's env config (its `camera` is rendered).
        env_states: [N, S] flat states (`rpd.data.env_state.get_env_state`).
        workers: Processes.
        progress: Called with the number of newly rendered states.

    Returns:
        (rgb [N, H, W, 3] uint8, proprio [N, P] float32), in the order of `env_states`.
    """
    from rpd.data.parallel import run_in_processes

    if cfg.camera is None:
        raise ValueError("render_states needs a camera in the env config")
    env_states = np.asarray(env_states, np.float32)
    n = max(1, min(workers, len(env_states)))
    bounds = np.linspace(0, len(env_states), n + 1).astype(int)
    jobs = [(_render_state_block, (cfg, env_states[a:b], int(a)))
            for a, b in itertools.pairwise(bounds) if b > a]
    parts = sorted(run_in_processes(jobs, n, progress), key=lambda part: part[0])
    if not parts:
        camera = cfg.camera
        return np.zeros((0, camera.height, camera.width, 3), np.uint8), np.zeros((0, 0), np.float32)
    return (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))


def _quiet_worker() -> None:
    """In a SubprocVecEnv worker: leave Ctrl-C to the main process (which closes the workers:
    one message, no traceback per worker) and die with the main process (Linux), so a killed
    run leaves no orphan simulators behind."""
    import multiprocessing
    import signal

    if multiprocessing.current_process().name == "MainProcess":
        return  # DummyVecEnv: the env lives in the main process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: a killed run's workers exit when their pipe closes


def _cpu_env_factory(cfg: EnvConfig, seed: int, env_index: int, start_step: int,
                     with_env_state: bool) -> Callable[[], Any]:
    """The builder a VecEnv worker calls to make training env `env_index` on the CPU."""

    def build() -> Any:
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

        _quiet_worker()

        # record_metrics stays off: with it SB3's VecMonitor fails with KeyError 'r'.
        # A pixel student's frame is added above CPUGymWrapper (which unbatches state arrays).
        state_cfg = replace(cfg, obs_mode="state")
        env = CPUGymWrapper(make_env(state_cfg), ignore_terminations=False,
                            record_metrics=False)
        env = SeededResets(env, seed, env_index, start_step)
        if with_env_state:
            env = EnvStateInfo(env)
        if cfg.obs_mode in PIXEL_OBS_MODES:
            env = PixelObservation(env, cfg.camera)  # type: ignore[arg-type]
        return env

    return build


def make_vec_env(cfg: EnvConfig, num_envs: int, seed: int = 0,
                 with_env_state: bool = False, start_step: int = 0,
                 batched: bool | None = None, workers: int | None = None) -> Any:
    """A Stable-Baselines3 VecEnv of `num_envs` copies of the task.

    CPU: ManiSkill CPUGymWrapper envs in `workers` processes (default: one per CPU core, at
    most one per env). One per env is SB3's SubprocVecEnv; fewer is
    `rpd.data.workers.GroupedVecEnv`, each process stepping a block of envs (8 envs on 2
    cores: PPO 1.25-1.44x faster, README). Every reset of env k (auto-resets too) is seeded from
    `episode_seeds(seed, k, start_step)`, whichever process holds it.
    GPU (or `batched=True`): one batched ManiSkill env behind `rpd.data.batched.BatchedVecEnv`,
    seeded from the same streams. On the CPU backend the batched path takes one env only.
    With `with_env_state`, every step's info and reset info carry "env_state" [S]: the
    simulator state of the returned observation (after an auto-reset, see `reset_infos`).
    """
    if num_envs <= 0:
        raise InputError(f"--envs {num_envs}: must be a positive number")
    if batched is None:
        batched = cfg.resolved_sim_backend != "physx_cpu"
    if batched:
        from rpd.data.batched import BatchedVecEnv

        return BatchedVecEnv(make_env(cfg, num_envs=num_envs), seed=seed,
                             start_step=start_step, with_env_state=with_env_state)
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rpd.data.workers import GroupedVecEnv, SubprocVecEnv

    workers = min(num_envs, os.cpu_count() or 1) if workers is None else workers
    if workers <= 0:
        raise InputError(f"--env-workers {workers}: must be a positive number")
    factories = [_cpu_env_factory(cfg, seed, i, start_step, with_env_state)
                 for i in range(num_envs)]
    if num_envs == 1:
        return DummyVecEnv(factories)
    if workers < num_envs:
        return GroupedVecEnv(factories, workers, start_method="spawn")
    return SubprocVecEnv(factories, start_method="spawn")
