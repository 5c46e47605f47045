"""What teachers and pixel students see: cameras, camera shifts, object colours, rendered
images and proprioception, and the pixel student's observation wrapper."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rpd.errors import InputError


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

PIXEL_OBS_MODES = ("rgb", "rgb+proprio")
"""Pixel student observations: the camera frame alone (the paper's), or with proprioception."""
STUDENT_KEYS = ("rgb", "proprio", "state")
"""A pixel student's observation dict: "rgb" [H, W, 3] uint8 (its camera), "proprio" [18] f32
(`robot_proprio`), "state" [D] f32 (the flat state observation: the cache key, and what an
asymmetric critic reads). Which of them the actor reads is the policy's business."""


def _rotated_camera_pose(pose: Any, degrees: float) -> Any:
    """Rotate a sapien.Pose about the world z axis through the origin by `degrees`."""
    import sapien
    from transforms3d.quaternions import axangle2quat

    rot = sapien.Pose(q=axangle2quat([0.0, 0.0, 1.0], math.radians(degrees)))
    return rot * pose


def shift_camera(env: Any, camera: CameraSpec) -> None:
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


def paint_object(env: Any, color: str) -> None:
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


def pixel_observation_space(image_size: tuple[int, int], proprio_dim: int,
                            state_dim: int) -> spaces.Dict:
    """The gymnasium Dict space of a pixel student's observations (`STUDENT_KEYS`)."""
    h, w = image_size
    return spaces.Dict({
        "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
        "proprio": spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32),
        "state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32),
    })


class PixelObservation(gym.ObservationWrapper):
    """A state-observation env whose observations become a pixel student's dict
    (`STUDENT_KEYS`), its frame rendered from `camera` once per step.

    Works on a single CPU env (under CPUGymWrapper: arrays without a batch dim) and on
    `make_env`'s batched env (a leading batch dim on every key; the declared space is one
    sub-env's).
    """

    def __init__(self, env: Any, camera: CameraSpec) -> None:
        super().__init__(env)
        self.camera = camera
        state_shape = env.observation_space.shape
        self.batched = len(state_shape) == 2
        proprio_dim = robot_proprio(env).shape[-1]
        self.observation_space = pixel_observation_space(
            (camera.height, camera.width), proprio_dim, state_shape[-1])

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        state = observation.cpu().numpy() if hasattr(observation, "cpu") else observation
        rgb = teacher_image(self.env, self.camera)
        obs = dict(rgb=rgb, proprio=robot_proprio(self.env),
                   state=np.asarray(state, np.float32).reshape(len(rgb), -1))
        return obs if self.batched else {k: v[0] for k, v in obs.items()}
