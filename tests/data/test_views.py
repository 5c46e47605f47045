"""Cameras, camera shifts, object colours and the pixel student's view: real ManiSkill envs
on the CPU backend."""

import numpy as np
import pytest

from rpd.data.env_state import get_env_state
from rpd.data.vec_envs import EnvConfig, make_env
from rpd.data.views import CameraSpec, teacher_image
from rpd.errors import InputError


def test_pixel_student_env_and_teacher_cameras() -> None:
    cfg = EnvConfig("PushCube-v1", obs_mode="rgb", camera=CameraSpec("render", 64, 48))
    env = make_env(cfg)
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"rgb", "proprio", "state"}
        assert obs["rgb"].shape == (1, 48, 64, 3) and obs["rgb"].dtype == np.uint8
        assert obs["proprio"].shape == (1, 18) and obs["state"].shape[0] == 1
        img = teacher_image(env, cfg.camera)
        assert img.shape == (1, 48, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5  # a rendered scene, not a blank frame
        np.testing.assert_array_equal(obs["rgb"], img)  # the frame of the current state
        sensor = teacher_image(env, CameraSpec("base_camera"))
        assert sensor.shape == (1, 128, 128, 3)
        with pytest.raises(InputError, match="no_such_cam"):
            teacher_image(env, CameraSpec("no_such_cam"))
    finally:
        env.close()
    with pytest.raises(InputError, match="--student-camera 'no_such_cam'"):
        make_env(EnvConfig("PushCube-v1", obs_mode="rgb", camera=CameraSpec("no_such_cam")))


def test_camera_shift_changes_the_teacher_view() -> None:
    images = []
    for shift in (0.0, 30.0):
        cfg = EnvConfig("PickCube-v1", camera=CameraSpec("render", 64, 64, shift_deg=shift))
        env = make_env(cfg)
        env.reset(seed=3)
        images.append(teacher_image(env, cfg.camera).astype(np.int16))
        env.close()
    assert np.abs(images[0] - images[1]).mean() > 5


def test_object_color_paints_only_the_task_object() -> None:
    """The variation changes a few pixels (the ~4 px cube), keeps the simulation, and is kept
    across resets; unknown colours and tasks without an object are refused."""
    images, states = [], []
    for color in (None, "green"):
        cfg = EnvConfig("PushCube-v1", camera=CameraSpec("render", 128, 128, object_color=color))
        env = make_env(cfg)
        env.reset(seed=1)
        env.reset(seed=3)
        images.append(teacher_image(env, cfg.camera).astype(np.int16))
        states.append(get_env_state(env))
        env.close()
    changed = (np.abs(images[0] - images[1]).sum(-1) > 30).sum()
    assert 5 <= changed <= 400, changed
    np.testing.assert_array_equal(states[0], states[1])
    with pytest.raises(InputError, match="--object-color 'purple'"):
        CameraSpec(object_color="purple")
    with pytest.raises(InputError, match="no object to paint"):
        make_env(EnvConfig("PegInsertionSide-v1", camera=CameraSpec(object_color="red")))
    assert "object_color" not in CameraSpec().to_dict()  # older fingerprints unchanged
