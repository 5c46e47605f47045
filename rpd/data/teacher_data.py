"""Teacher training data: demo frames rendered once from the teacher's camera, kept in Zarr.

Rendering is the slow part on a CPU (each demo step is restored from its recorded env state
and rendered), so it is done once per (demo file, camera) and stored beside the demos:

    DEMO_DIR/teacher_data/{demo stem}.{camera}-{W}x{H}.zarr     (Zarr v3 group)
        frames   [N, H, W, 3] uint8   teacher-camera image before action t
        actions  [N, A] float32       the demo's action at t (env units)
        proprio  [N, P] float32       robot joint positions then velocities at t
        episode  [N] int32            episode id in the demo file
        step     [N] int32            t
        attrs: schema_version, env_id, control_mode, camera, source (size, mtime, episodes),
               complete (written last: a group without it is ignored and re-rendered)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.trajectories import TrajectoryFile, open_trajectory
from rpd.data.views import CameraSpec
from rpd.errors import InputError

logger = logging.getLogger(__name__)

DATA_SCHEMA_VERSION = 2  # 2: proprio holds joint velocities after positions
PROPRIO_DIM = 18  # Panda: positions then velocities of 7 arm joints + 2 fingers


def dataset_path(h5_path: Path, camera: CameraSpec) -> Path:
    """Where the rendered data for a demo file and camera lives."""
    return (Path(h5_path).parent / "teacher_data"
            / f"{Path(h5_path).stem}.{camera.name}-{camera.width}x{camera.height}.zarr")


def _source_signature(traj: TrajectoryFile) -> dict[str, Any]:
    st = traj.h5_path.stat()
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns, episodes=len(traj.episodes))


def _episode_states(traj: TrajectoryFile, episode_id: int) -> tuple[dict[str, Any], int]:
    """All env states of an episode as a nested dict of [T+1, ...] arrays, and T+1."""
    import h5py

    def read(node: Any) -> Any:
        if isinstance(node, h5py.Dataset):
            return node[()]
        return {k: read(node[k]) for k in node}

    with h5py.File(traj.h5_path, "r") as f:
        group = f[f"traj_{episode_id}"]
        if "env_states" not in group:
            raise InputError(
                f"{traj.h5_path}: traj_{episode_id} has no env_states; teacher data is rendered "
                "from recorded env states: use demos recorded by ManiSkill/rpd with states"
            )
        states = read(group["env_states"])
    leaf = states
    while isinstance(leaf, dict):
        leaf = next(iter(leaf.values()))
    return states, len(leaf)


def _index(states: dict[str, Any], t: int) -> dict[str, Any]:
    return {k: _index(v, t) if isinstance(v, dict) else v[t] for k, v in states.items()}


def _render_episodes(h5_path: str, episode_ids: list[int], camera: CameraSpec, out_dir: str,
                     progress: Any) -> list[str]:
    """Worker: render each episode's steps to out_dir/ep_{id}.npz (atomic per episode)."""
    from rpd.data.vec_envs import EnvConfig, make_env
    from rpd.data.views import robot_proprio, teacher_image

    traj = open_trajectory(h5_path)
    env = make_env(EnvConfig(traj.env_id, control_mode=traj.control_mode, camera=camera,
                             max_episode_steps=10_000))
    written = []
    by_id = {ep["episode_id"]: ep for ep in traj.episodes}
    for eid in episode_ids:
        out = Path(out_dir) / f"ep_{eid}.npz"
        if not out.exists():
            ep = by_id[eid]
            seed = ep.get("episode_seed", (ep.get("reset_kwargs") or {}).get("seed", 0))
            env.reset(seed=seed[0] if isinstance(seed, list) else seed)
            states, n_states = _episode_states(traj, eid)
            import h5py

            with h5py.File(h5_path, "r") as f:
                actions = f[f"traj_{eid}/actions"][()].astype(np.float32)
            frames, proprio = [], []
            for t in range(len(actions)):
                env.unwrapped.set_state_dict(_index(states, min(t, n_states - 1)))
                frames.append(teacher_image(env, camera)[0])
                proprio.append(robot_proprio(env)[0])
            tmp = out.with_name(f".{out.name}.tmp.npz")
            np.savez(tmp, frames=np.stack(frames), actions=actions,
                     proprio=np.stack(proprio).astype(np.float32))
            os.replace(tmp, out)
        written.append(str(out))
        if progress is not None:
            progress.put(1)
    env.close()
    return written


def render_teacher_data(h5_path: str | Path, camera: CameraSpec, workers: int = 1,
                        progress: Callable[[int], None] | None = None) -> Path:
    """Render (or reuse) the teacher data of one demo file; returns the Zarr group's path.

    Resumable: episodes already rendered by an interrupted run are kept in a scratch dir
    beside the group and reused.
    """
    import zarr

    from rpd.data.parallel import run_in_processes

    traj = open_trajectory(h5_path, option="--demos")
    path = dataset_path(traj.h5_path, camera)
    signature = _source_signature(traj)
    if path.exists():
        try:
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
        except Exception:  # unreadable leftovers are re-rendered
            attrs = {}
        if (attrs.get("complete") and attrs.get("source") == signature
                and attrs.get("schema_version") == DATA_SCHEMA_VERSION):
            if progress is not None:
                progress(len(traj.episodes))
            return path
    # Episodes of an interrupted run, reused only by the same data format.
    scratch = path.with_name(f".{path.name}.episodes-v{DATA_SCHEMA_VERSION}")
    scratch.mkdir(parents=True, exist_ok=True)
    ids = [ep["episode_id"] for ep in traj.episodes]
    n = max(1, min(workers, len(ids)))
    jobs = [(_render_episodes, (str(traj.h5_path), ids[i::n], camera, str(scratch)))
            for i in range(n)]
    run_in_processes(jobs, workers, progress)

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    episodes = [np.load(scratch / f"ep_{i}.npz") for i in ids]
    n_total = sum(len(e["actions"]) for e in episodes)
    h, w = camera.height, camera.width
    group = zarr.open_group(str(tmp), mode="w")
    frames = group.create_array("frames", shape=(n_total, h, w, 3), chunks=(64, h, w, 3),
                                dtype="uint8")
    a_dim = episodes[0]["actions"].shape[1]
    cols = dict(actions=np.concatenate([e["actions"] for e in episodes]),
                proprio=np.concatenate([e["proprio"] for e in episodes]),
                episode=np.concatenate([np.full(len(e["actions"]), i, np.int32)
                                        for i, e in zip(ids, episodes, strict=True)]),
                step=np.concatenate([np.arange(len(e["actions"]), dtype=np.int32)
                                     for e in episodes]))
    start = 0
    for e in episodes:
        frames[start:start + len(e["actions"])] = e["frames"]
        start += len(e["actions"])
    for name, arr in cols.items():
        group.create_array(name, shape=arr.shape, dtype=arr.dtype,
                           chunks=(min(len(arr), 65536), *arr.shape[1:]))[:] = arr
    group.attrs.update(dict(schema_version=DATA_SCHEMA_VERSION, env_id=traj.env_id,
                            control_mode=traj.control_mode, camera=asdict(camera),
                            source=signature, action_dim=int(a_dim), complete=True))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    shutil.rmtree(scratch, ignore_errors=True)
    return path


@dataclass
class TeacherData:
    """Teacher training data from one or more demo files, in memory.

    Attributes:
        frames: [N, H, W, 3] uint8.
        actions: [N, A] float32, env units.
        proprio: [N, P] float32.
        episode: [N] int64, unique across files.
        step: [N] int64.
        env_ids: [N] task id of each row.
    """

    frames: np.ndarray
    actions: np.ndarray
    proprio: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    env_ids: np.ndarray
    control_mode: str

    def __len__(self) -> int:
        return len(self.actions)

    def chunk_targets(self, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Future actions per row: [N, C, A] and validity mask [N, C] (False past episode end;
        those slots repeat the last action)."""
        n = len(self.actions)
        rows = np.arange(n)
        # Rows of an episode are contiguous: its last row is where the episode id changes.
        change = np.r_[self.episode[1:] != self.episode[:-1], True]
        last = np.minimum.accumulate(np.where(change, rows, n)[::-1])[::-1]
        want = rows[:, None] + np.arange(chunk_size)[None, :]
        mask = want <= last[:, None]
        return self.actions[np.minimum(want, last[:, None])], mask


def load_teacher_data(paths: list[Path]) -> TeacherData:
    """Concatenate rendered data groups (they must share control mode and camera size)."""
    import zarr

    parts, offset, modes = [], 0, set()
    for p in paths:
        g = zarr.open_group(str(p), mode="r")
        modes.add(g.attrs["control_mode"])
        ep = g["episode"][:].astype(np.int64)
        parts.append(dict(frames=g["frames"][:], actions=g["actions"][:], proprio=g["proprio"][:],
                          episode=ep + offset, step=g["step"][:].astype(np.int64),
                          env_ids=np.full(len(ep), g.attrs["env_id"], dtype=object)))
        offset += int(ep.max()) + 1 if len(ep) else 0
    if len(modes) > 1:
        raise InputError(f"--demos: files mix control modes {sorted(modes)}; use one mode")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return TeacherData(control_mode=modes.pop(), **cat)
