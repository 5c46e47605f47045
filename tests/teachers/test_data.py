"""Teacher training data: rendered once from demo states, stored in Zarr, reused."""

from pathlib import Path

import numpy as np
import pytest

from rpd.data.teacher_data import dataset_path, load_teacher_data, render_teacher_data
from rpd.data.trajectories import open_trajectory
from rpd.data.views import CameraSpec


@pytest.mark.slow
def test_render_stores_frames_actions_proprio_and_is_reused(demo_file: Path) -> None:
    camera = CameraSpec("render", 48, 48)
    ticks: list[int] = []
    path = render_teacher_data(demo_file, camera, workers=2, progress=ticks.append)
    assert path == dataset_path(demo_file, camera) and sum(ticks) == 2
    data = load_teacher_data([path])
    traj = open_trajectory(demo_file)
    n = sum(ep["elapsed_steps"] for ep in traj.episodes)
    assert data.frames.shape == (n, 48, 48, 3) and data.frames.dtype == np.uint8
    assert data.actions.shape == (n, 7) and data.proprio.shape == (n, 18)
    # joint positions then velocities: the arm moves, so some velocities are non-zero
    assert np.abs(data.proprio[:, 9:]).max() > 1e-3 and np.abs(data.proprio[:, :9]).max() > 0.1
    first = next(traj.iter_episodes())[1]["actions"]
    np.testing.assert_allclose(data.actions[: len(first)], first)
    assert data.frames[0].std() > 5 and not np.array_equal(data.frames[0], data.frames[30])
    assert set(data.env_ids) == {"PickCube-v1"}
    mtime = (path / "zarr.json").stat().st_mtime_ns
    render_teacher_data(demo_file, camera)  # reused, not rendered again
    assert (path / "zarr.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_data_of_an_older_format_is_rendered_again(demo_file: Path) -> None:
    """Data written before proprio held velocities (format 1, 9 dims) and episodes left by an
    interrupted run of that format are not reused."""
    import zarr

    camera = CameraSpec("render", 32, 32)
    path = dataset_path(demo_file, camera)
    old = zarr.open_group(str(path), mode="w")  # a finished format-1 store: 9 proprio dims
    old.create_array("proprio", shape=(3, 9), dtype="float32")[:] = 0
    old.attrs["schema_version"] = 1
    stale = path.with_name(f".{path.name}.episodes")  # format 1's scratch dir
    stale.mkdir()
    np.savez(stale / "ep_0.npz", frames=np.zeros((1, 32, 32, 3), np.uint8),
             actions=np.zeros((1, 7), np.float32), proprio=np.zeros((1, 9), np.float32))
    path = render_teacher_data(demo_file, camera, workers=1)
    assert zarr.open_group(str(path), mode="r").attrs["schema_version"] == 2
    data = load_teacher_data([path])
    assert data.proprio.shape[1] == 18 and len(data) == len(data.frames) > 1


def test_chunk_targets_stop_at_episode_end() -> None:
    from rpd.data.teacher_data import TeacherData

    actions = np.arange(5, dtype=np.float32)[:, None]
    data = TeacherData(frames=np.zeros((5, 2, 2, 3), np.uint8), actions=actions,
                       proprio=np.zeros((5, 9), np.float32), episode=np.array([0, 0, 0, 1, 1]),
                       step=np.array([0, 1, 2, 0, 1]), env_ids=np.array(["a"] * 5, dtype=object),
                       control_mode="pd_ee_delta_pose")
    chunks, mask = data.chunk_targets(3)
    np.testing.assert_array_equal(chunks[..., 0], [[0, 1, 2], [1, 2, 2], [2, 2, 2],
                                                   [3, 4, 4], [4, 4, 4]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]])
