"""The one place that creates ManiSkill environments, and the registry of supported tasks.

Everything else in rpd asks this module for environments, so the simulator backend, the
render backend, the teacher camera and the CPU threading rule are decided here once.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from rpd.data.seeds import TRAINING
from rpd.errors import InputError, SetupError

logger = logging.getLogger(__name__)

ObsMode = Literal["state", "rgb", "rgb+proprio"]
RewardMode = Literal["normalized_dense", "dense", "sparse"]

SIM_BACKENDS = {"auto": "auto", "cpu": "physx_cpu", "gpu": "physx_cuda"}
"""`--sim-backend` choices -> ManiSkill sim backends ("auto": the GPU when CUDA is present)."""

DEFAULT_CONTROL_MODE = "pd_ee_delta_pose"
"""7-D end-effector delta pose + gripper: the action space closest to what VLAs output."""


@dataclass(frozen=True)
class TaskSpec:
    """A supported task. ManiSkill's tabletop tasks ship no language, so rpd defines it.

    Attributes:
        env_id: ManiSkill environment id.
        instruction: Natural-language instruction given to a VLA teacher.
        motion_planner: Whether ManiSkill ships a motion-planning solution (`rpd demos generate`).
    """

    env_id: str
    instruction: str
    motion_planner: bool


TASKS: dict[str, TaskSpec] = {
    t.env_id: t
    for t in [
        TaskSpec("PickCube-v1", "pick up the red cube and move it to the goal", True),
        TaskSpec("PushCube-v1", "push the cube forward onto the red and white target", True),
        TaskSpec("PullCube-v1", "pull the cube back onto the red and white target", True),
        TaskSpec("StackCube-v1", "stack the red cube on top of the green cube", True),
        TaskSpec("LiftPegUpright-v1", "lift the peg lying on the table and stand it upright", True),
        TaskSpec(
            "PegInsertionSide-v1", "insert the peg into the hole of the box from the side", True
        ),
        TaskSpec("PlugCharger-v1", "plug the charger into the socket on the wall", True),
        TaskSpec("PullCubeTool-v1", "use the L-shaped tool to pull the cube closer", True),
        TaskSpec("PokeCube-v1", "use the peg to poke the cube onto the goal", False),
        TaskSpec("RollBall-v1", "push the ball so that it rolls into the goal region", False),
    ]
}


def get_task(env_id: str, option: str = "--env") -> TaskSpec:
    """Return the task spec for `env_id`, or raise an InputError listing the supported ids."""
    try:
        return TASKS[env_id]
    except KeyError:
        raise InputError(
            f"{option} {env_id!r}: unknown task; supported: {', '.join(TASKS)}"
        ) from None


@dataclass(frozen=True)
class CameraSpec:
    """The camera a teacher sees.

    Attributes:
        name: "render" is ManiSkill's human render camera (the paper's teacher view; the only
            camera that shows goal markers such as PickCube's goal site); any other name is a
            sensor camera of the task, e.g. "base_camera".
        width: Image width in pixels.
        height: Image height in pixels.
        shift_deg: Rotate the camera about the vertical axis through the scene origin by this
            many degrees (the paper's changed-perspective robustness test). 0 = task default.
        object_color: Paint the task's object in this colour (`OBJECT_COLORS`), a task
            variation a teacher was not fine-tuned on; None = the task's own colour. It changes
            only what is rendered (the simulation is the same).
    """

    name: str = "render"
    width: int = 128
    height: int = 128
    shift_deg: float = 0.0
    object_color: str | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"camera size {self.width}x{self.height}: must be positive")
        if self.object_color is not None and self.object_color not in OBJECT_COLORS:
            raise InputError(f"--object-color {self.object_color!r}: use one of "
                             f"{', '.join(OBJECT_COLORS)}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, without `object_color` when unset (older teachers' fingerprints hold)."""
        d = asdict(self)
        if d["object_color"] is None:
            del d["object_color"]
        return d


OBJECT_COLORS: dict[str, tuple[float, float, float]] = {
    "green": (0.1, 0.7, 0.1), "red": (0.85, 0.1, 0.1), "yellow": (0.9, 0.8, 0.1),
}
"""Colours for `CameraSpec.object_color` (linear RGB)."""
TASK_OBJECTS: dict[str, str] = {
    "PushCube-v1": "obj", "PullCube-v1": "obj", "PickCube-v1": "cube", "StackCube-v1": "cubeA",
}
"""The attribute of each task's env holding the object a colour variation paints."""


@dataclass
class EnvConfig:
    """How to build a ManiSkill environment for rpd.

    Attributes:
        env_id: A task from `TASKS`.
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
        env_kwargs: Extra keyword arguments for `gym.make` (task variations).
    """

    env_id: str
    obs_mode: ObsMode = "state"
    control_mode: str = DEFAULT_CONTROL_MODE
    reward_mode: RewardMode = "normalized_dense"
    max_episode_steps: int | None = None
    camera: CameraSpec | None = None
    sim_backend: str = "auto"
    env_kwargs: dict[str, Any] = field(default_factory=dict)

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


def check_sim_backend(choice: str) -> str:
    """A `--sim-backend` choice (or a ManiSkill backend name) -> ManiSkill's backend name.

    Raises:
        InputError: an unknown choice, or the GPU backend without a CUDA device.
    """
    backend = SIM_BACKENDS.get(choice, choice)
    if backend not in ("auto", "physx_cpu", "physx_cuda"):
        raise InputError(f"--sim-backend {choice!r}: use auto, cpu or gpu")
    if backend == "physx_cuda" and not cuda_available():
        raise InputError("--sim-backend gpu: torch sees no CUDA device here; use --sim-backend "
                         "cpu (or auto, which takes the GPU where there is one)")
    return backend


def resolve_device(choice: str, option: str = "--device") -> str:
    """A `--device` choice -> a torch device string: "auto" (CUDA when present), "cpu", "cuda"
    or "cuda:N".

    Raises:
        InputError: an unknown choice, or CUDA asked for where torch sees none.
    """
    if choice not in ("auto", "cpu", "cuda") and not choice.startswith("cuda:"):
        raise InputError(f"{option} {choice!r}: use auto, cpu or cuda")
    if choice == "auto":
        return "cuda" if cuda_available() else "cpu"
    if choice.startswith("cuda") and not cuda_available():
        raise InputError(f"{option} {choice}: torch sees no CUDA device here; use {option} cpu "
                         "(or auto, which takes the GPU where there is one)")
    return choice


def cuda_available() -> bool:
    """True when torch sees a CUDA device (then ManiSkill's GPU simulation is used)."""
    import torch

    return torch.cuda.is_available()


def limit_cpu_threads() -> None:
    """Call in every process that owns a ManiSkill CPU env.

    Measured on a 2-core machine: without it small torch ops were ~100x slower (SB3 PPO took
    28.7 s instead of 3.9 s per 1024 steps) because torch's thread pool fights the simulator.
    """
    import torch

    torch.set_num_threads(1)


def _rotated_camera_pose(pose: Any, degrees: float) -> Any:
    """Rotate a sapien.Pose about the world z axis through the origin by `degrees`."""
    import sapien
    from transforms3d.quaternions import axangle2quat

    rot = sapien.Pose(q=axangle2quat([0.0, 0.0, 1.0], math.radians(degrees)))
    return rot * pose


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
        **cfg.env_kwargs,
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
        _shift_camera(env, camera)
    if camera is not None and camera.object_color:
        _paint_object(env, camera.object_color)
    if cfg.obs_mode in PIXEL_OBS_MODES:
        env = PixelObservation(env, camera)  # type: ignore[arg-type]
    return env


def _paint_object(env: Any, color: str) -> None:
    """Give the task's object (`TASK_OBJECTS`) the colour `OBJECT_COLORS[color]` (kept across
    resets that do not rebuild the scene)."""
    import sapien

    base = env.unwrapped
    env_id = base.spec.id
    if env_id not in TASK_OBJECTS:
        raise InputError(f"--object-color {color}: {env_id} has no object to paint; "
                         f"colour variations exist for {', '.join(TASK_OBJECTS)}")
    rgba = [*OBJECT_COLORS[color], 1.0]
    for entity in getattr(base, TASK_OBJECTS[env_id])._objs:
        body = entity.find_component_by_type(sapien.render.RenderBodyComponent)
        for shape in body.render_shapes if body is not None else []:
            for part in getattr(shape, "parts", [shape]):
                part.material.set_base_color(rgba)


def _shift_camera(env: Any, camera: CameraSpec) -> None:
    """Move the teacher camera by `camera.shift_deg` about the scene's vertical axis."""
    base = env.unwrapped
    base.reset(seed=0)
    if camera.name == "render":
        configs = base._human_render_camera_configs
        custom_attr = "_custom_human_render_camera_configs"
        uid = next(iter(configs))
    else:
        configs, custom_attr = base._sensor_configs, "_custom_sensor_configs"
        uid = camera.name
        if uid not in configs:
            raise InputError(
                f"--camera {uid!r}: {base.spec.id} has cameras {', '.join(configs)} and 'render'"
            )
    pose = _rotated_camera_pose(configs[uid].pose.sp, camera.shift_deg)
    custom = dict(getattr(base, custom_attr) or {})
    custom[uid] = {**custom.get(uid, {}), "pose": pose}
    setattr(base, custom_attr, custom)
    base.reset(seed=0, options=dict(reconfigure=True))


def teacher_image(env: Any, camera: CameraSpec) -> np.ndarray:
    """Render what the teacher sees in the env's current state.

    Returns:
        RGB images [B, H, W, 3] uint8, B = the env's number of sub-environments.
    """
    base = env.unwrapped
    if camera.name == "render":
        img = base.render_rgb_array()
    else:
        images = base.get_sensor_images()
        if camera.name not in images:
            raise InputError(
                f"--camera {camera.name!r}: {base.spec.id} has cameras "
                f"{', '.join(images)} and 'render'"
            )
        img = images[camera.name]["rgb"]
    img = img.cpu().numpy() if hasattr(img, "cpu") else np.asarray(img)
    if img.ndim == 3:
        img = img[None]
    return img.astype(np.uint8, copy=False)


def robot_proprio(env: Any) -> np.ndarray:
    """The robot's proprioception as teachers see it: joint positions then joint velocities,
    [B, 2 * dof] float32 (Panda: 9 + 9). Velocities tell a policy where it is within a
    motion, which joint positions alone do not."""
    robot = env.unwrapped.agent.robot
    parts = [robot.get_qpos(), robot.get_qvel()]
    arrays = [p.cpu().numpy() if hasattr(p, "cpu") else np.asarray(p) for p in parts]
    return np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1).astype(np.float32)


def get_env_state(env: Any) -> np.ndarray:
    """The simulator state of every sub-env as a flat vector: [B, S] float32.

    Enough to restore the scene exactly (`set_env_state`) and re-render any camera.
    """
    state = env.unwrapped.get_state()
    return state.cpu().numpy().astype(np.float32) if hasattr(state, "cpu") else np.asarray(state)


def set_env_state(env: Any, state: np.ndarray) -> None:
    """Restore states from `get_env_state`: [B, S] (or [S] for a single env)."""
    import torch

    state = np.asarray(state, dtype=np.float32)
    if state.ndim == 1:
        state = state[None]
    env.unwrapped.set_state(torch.as_tensor(state, device=env.unwrapped.device))


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
        env_states: [N, S] flat states (`get_env_state`).
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


class EnvStateInfo:
    """Wrapper factory: adds info["env_state"] ([S] float32, the state of the returned
    observation) to every reset and step of a single CPU env (under CPUGymWrapper)."""

    def __new__(cls, env: Any) -> Any:
        import gymnasium as gym

        class _EnvStateInfo(gym.Wrapper):
            def reset(self, **kwargs: Any) -> Any:
                obs, info = self.env.reset(**kwargs)
                info["env_state"] = get_env_state(self.env)[0]
                return obs, info

            def step(self, action: Any) -> Any:
                obs, reward, terminated, truncated, info = self.env.step(action)
                info["env_state"] = get_env_state(self.env)[0]
                return obs, reward, terminated, truncated, info

        return _EnvStateInfo(env)


PIXEL_OBS_MODES = ("rgb", "rgb+proprio")
"""Pixel student observations: the camera frame alone (the paper's), or with proprioception."""
STUDENT_KEYS = ("rgb", "proprio", "state")
"""A pixel student's observation dict: "rgb" [H, W, 3] uint8 (its camera), "proprio" [18] f32
(`robot_proprio`), "state" [D] f32 (the flat state observation: the cache key, and what an
asymmetric critic reads). Which of them the actor reads is the policy's business."""


def pixel_observation_space(image_size: tuple[int, int], proprio_dim: int,
                            state_dim: int) -> Any:
    """The gymnasium Dict space of a pixel student's observations (`STUDENT_KEYS`)."""
    from gymnasium import spaces

    h, w = image_size
    return spaces.Dict({
        "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
        "proprio": spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32),
        "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
    })


class PixelObservation:
    """Wrapper factory: a state-observation env whose observations become a pixel student's
    dict (`STUDENT_KEYS`), its frame rendered from `camera` once per step.

    Works on a single CPU env (under CPUGymWrapper: arrays without a batch dim) and on
    `make_env`'s batched env (a leading batch dim on every key; the declared space is one
    sub-env's).
    """

    def __new__(cls, env: Any, camera: CameraSpec) -> Any:
        import gymnasium as gym

        class _PixelObservation(gym.ObservationWrapper):
            def __init__(self, env: Any) -> None:
                super().__init__(env)
                state_shape = env.observation_space.shape
                self.batched = len(state_shape) == 2
                proprio_dim = robot_proprio(env).shape[-1]
                self.observation_space = pixel_observation_space(
                    (camera.height, camera.width), proprio_dim, state_shape[-1])

            def observation(self, observation: Any) -> dict[str, np.ndarray]:
                state = observation.cpu().numpy() if hasattr(observation, "cpu") else observation
                rgb = teacher_image(self.env, camera)
                obs = dict(rgb=rgb, proprio=robot_proprio(self.env),
                           state=np.asarray(state, np.float32).reshape(len(rgb), -1))
                return obs if self.batched else {k: v[0] for k, v in obs.items()}

        return _PixelObservation(env)


TRAIN_SEED_RANGE = (TRAINING.start, TRAINING.stop)
"""Training envs draw every episode seed from [2^31, 2^32), the seed plan's training range
(`rpd.data.seeds`): no demo, cache rollout or evaluation starts where a training episode did."""


def episode_seeds(seed: int, env_index: int, start_step: int = 0) -> np.random.Generator:
    """The generator of training env `env_index`'s episode seeds under run seed `seed`.

    Each env gets its own stream from numpy's SeedSequence with spawn key (env_index,
    start_step), so env k of seed s and env k' of seed s' never share a stream (SB3's
    `seed + k` made env 1 of seed 0 start where env 0 of seed 1 does), and a run resumed at
    `start_step` continues with episodes its first part did not see.
    """
    if seed < 0:
        raise InputError(f"--seed {seed}: must be ≥ 0")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(env_index, start_step)))


EPISODE_SEED_STEP = "episode_seed_step"
"""Reset option of a training env (`SeededResets`, `rpd.data.batched.BatchedVecEnv`): restart
its episode-seed stream at `episode_seeds(run seed, k, step)` with step = the option's value,
as an env built with that `start_step` has it. `RPDPPO.restart_episodes` resets every env so at
a checkpoint, so a run resumed there starts the same episodes as the run that went on."""


class SeededResets:
    """Wrapper factory: every reset of training env `env_index` is seeded from its own
    `episode_seeds` stream, so auto-resets are as repeatable as the first one. The seed used is
    in the reset info as "episode_seed".

    A reset given a seed (SB3's `VecEnv.seed(s)` hands env k the seed s + k) restarts the
    stream of run seed s, so a model built with the same seed replays the same episodes on the
    same env object, and no env takes s + k itself as an episode seed. A reset given the option
    `EPISODE_SEED_STEP` restarts the stream at that step.
    """

    def __new__(cls, env: Any, seed: int, env_index: int, start_step: int = 0) -> Any:
        import gymnasium as gym

        class _SeededResets(gym.Wrapper):
            run_seed = seed
            seeds = episode_seeds(seed, env_index, start_step)

            def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
                if seed is not None:
                    self.run_seed = max(seed - env_index, 0)
                    self.seeds = episode_seeds(self.run_seed, env_index, start_step)
                if options and EPISODE_SEED_STEP in options:
                    options = dict(options)
                    step = int(options.pop(EPISODE_SEED_STEP))
                    self.seeds = episode_seeds(self.run_seed, env_index, step)
                episode_seed = int(self.seeds.integers(*TRAIN_SEED_RANGE))
                obs, info = self.env.reset(seed=episode_seed, options=options or None)
                info["episode_seed"] = episode_seed
                return obs, info

        return _SeededResets(env)


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
