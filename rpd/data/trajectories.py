"""ManiSkill trajectory files (.h5 + .json): the demo format every rpd stage reads.

Layout (ManiSkill's own, so downloaded and generated demos are interchangeable):

    FILE.h5   traj_{id}/actions [T, A] f32, traj_{id}/env_states/..., traj_{id}/success [T] bool,
              traj_{id}/terminated, traj_{id}/truncated (and obs/ when recorded with observations)
    FILE.json {"env_info": {"env_id", "env_kwargs", "max_episode_steps"},
               "episodes": [{"episode_id", "episode_seed", "control_mode", "elapsed_steps",
                             "reset_kwargs", "success", ...}]}

This module is the one place that knows that layout: validation with errors that name the
file and the fix, summaries for `rpd demos info`, and episode iteration for later stages.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpd.errors import InputError

logger = logging.getLogger(__name__)


def json_path_for(h5_path: str | Path) -> Path:
    """The .json that accompanies a trajectory .h5 (same name, .json suffix)."""
    return Path(h5_path).with_suffix(".json")


@dataclass(frozen=True)
class TrajectoryFile:
    """A validated ManiSkill trajectory file pair.

    Attributes:
        h5_path: The .h5 with per-episode arrays.
        meta: The parsed .json (env_info and episodes).
    """

    h5_path: Path
    meta: dict[str, Any]

    @property
    def json_path(self) -> Path:
        return json_path_for(self.h5_path)

    @property
    def env_id(self) -> str:
        return self.meta["env_info"]["env_id"]

    @property
    def env_kwargs(self) -> dict[str, Any]:
        return dict(self.meta["env_info"].get("env_kwargs", {}))

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return self.meta["episodes"]

    @property
    def control_mode(self) -> str:
        """The episodes' control mode (ManiSkill stores it per episode; all must agree)."""
        modes = {ep.get("control_mode") for ep in self.episodes}
        modes.discard(None)
        if not modes:
            return self.env_kwargs.get("control_mode", "pd_joint_pos")
        if len(modes) > 1:
            raise InputError(
                f"{self.json_path}: episodes mix control modes {sorted(modes)}; "
                "split the file by control mode"
            )
        return modes.pop()

    def env_state(self, episode_id: int, t: int) -> dict[str, Any] | None:
        """The env state (nested dict of arrays) of an episode at step `t`, or None if absent."""
        import h5py

        def read(node: Any) -> Any:
            if isinstance(node, h5py.Dataset):
                return node[t]
            return {k: read(node[k]) for k in node}

        with h5py.File(self.h5_path, "r") as f:
            group = f[f"traj_{episode_id}"]
            return read(group["env_states"]) if "env_states" in group else None

    def iter_episodes(self) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """Yield (episode metadata, {"actions": [T, A], "success": [T], ...}) in file order."""
        import h5py

        with h5py.File(self.h5_path, "r") as f:
            for ep in self.episodes:
                group = f[f"traj_{ep['episode_id']}"]
                arrays = {k: group[k][()] for k in group if isinstance(group[k], h5py.Dataset)}
                yield ep, arrays


def _load_json(path: Path, h5_path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(
            f"{path}: missing; a ManiSkill trajectory is an .h5 with a .json of the same name "
            f"beside it; put the .json next to {h5_path.name} or regenerate the demos"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path}: not valid JSON ({e}); re-download or regenerate it with the .h5"
        ) from None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("env_info"), dict)
        or "env_id" not in meta["env_info"]
        or not isinstance(meta.get("episodes"), list)
    ):
        raise InputError(
            f"{path}: not a ManiSkill trajectory .json (needs env_info.env_id and episodes); "
            "use the .json written with the .h5"
        )
    return meta


PAIR_KEY = "rpd_pair"
"""A token rpd writes into both files of a pair (the .h5's root attribute and a .json key), so a
.json beside an .h5 it was not written with is refused. Files without it (ManiSkill's own)
are checked by content only."""


def publish_pair(h5_tmp: Path, meta: dict[str, Any], out: Path) -> None:
    """Move a finished trajectory .h5 (written at `h5_tmp`) and its .json (`meta`) into place at
    `out`, as a pair.

    Both get the same fresh token. The old .json goes first and the new one comes last, so an
    interrupted publish leaves an .h5 without a .json (refused by `open_trajectory`), never a
    new .h5 beside an old .json that happens to agree with it.
    """
    import uuid

    import h5py

    token = uuid.uuid4().hex
    with h5py.File(h5_tmp, "a") as f:
        f.attrs[PAIR_KEY] = token
    meta = {**meta, PAIR_KEY: token}
    json_tmp = out.with_name(f".{out.name}.json.tmp")
    json_tmp.write_text(json.dumps(meta, indent=2))
    json_path_for(out).unlink(missing_ok=True)
    os.replace(h5_tmp, out)
    os.replace(json_tmp, json_path_for(out))


def is_complete_pair(h5_path: Path) -> bool:
    """Whether `h5_path` and its .json exist and belong together (see `publish_pair`)."""
    try:
        open_trajectory(h5_path)
    except InputError:
        return False
    return True


def open_trajectory(h5_path: str | Path, *, option: str = "FILE") -> TrajectoryFile:
    """Open and validate a ManiSkill trajectory file pair.

    Checks that the .h5 is readable HDF5 with a traj_N group holding actions for every episode
    in the .json, and that each episode's length matches its `elapsed_steps`.

    Raises:
        InputError: one line naming the file and what to do.
    """
    import h5py

    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise InputError(f"{option} {h5_path}: no such file")
    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise InputError(
            f"{h5_path}: not a readable HDF5 file ({str(e).split(';')[0].strip()}); it may be "
            "truncated by an interrupted writer: regenerate or re-download it"
        ) from None
    with f:
        traj_keys = [k for k in f.keys() if k.startswith("traj_")]
        if not traj_keys:
            raise InputError(
                f"{h5_path}: not a ManiSkill trajectory file (no traj_N groups); "
                "pass an .h5 written by ManiSkill or `rpd demos generate`"
            )
        meta = _load_json(json_path_for(h5_path), h5_path)
        token = f.attrs.get(PAIR_KEY)
        if isinstance(token, bytes):
            token = token.decode()
        if (token is not None or PAIR_KEY in meta) and token != meta.get(PAIR_KEY):
            raise InputError(
                f"{json_path_for(h5_path)} was not written with {h5_path.name} (an interrupted "
                "write?); regenerate the demos (or pass --force to the command that made them)"
            )
        for ep in meta["episodes"]:
            if "episode_id" not in ep:
                raise InputError(f"{json_path_for(h5_path)}: an episode lacks episode_id")
            key = f"traj_{ep['episode_id']}"
            try:
                group = f[key]
            except (KeyError, OSError) as e:
                raise InputError(
                    f"{json_path_for(h5_path)} does not match {h5_path.name}: episode {key} "
                    f"is missing or unreadable in the .h5 ({type(e).__name__}); use the .json "
                    "written with this .h5"
                ) from None
            try:
                n = group["actions"][()].shape[0]  # read in full: a truncated file fails here
            except KeyError:
                raise InputError(
                    f"{h5_path}: {key} has no 'actions'; not a ManiSkill trajectory file"
                ) from None
            except OSError:
                raise InputError(
                    f"{h5_path}: {key} is unreadable; the file looks truncated by an "
                    "interrupted writer: regenerate or re-download it"
                ) from None
            steps = ep.get("elapsed_steps")
            if steps is not None and steps != n:
                raise InputError(
                    f"{json_path_for(h5_path)} does not match {h5_path.name}: {key} has {n} "
                    f"actions but the .json says elapsed_steps={steps}; use the .json written "
                    "with this .h5"
                )
    return TrajectoryFile(h5_path=h5_path, meta=meta)


@dataclass(frozen=True)
class TrajectoryInfo:
    """Summary of a trajectory file, as `rpd demos info` prints it."""

    path: str
    env_id: str
    control_mode: str
    obs_mode: str
    episodes: int
    success_rate: float
    length_min: int
    length_mean: float
    length_max: int
    action_dim: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(traj: TrajectoryFile) -> TrajectoryInfo:
    """Episode count, success rate (success at the last step) and length statistics."""
    lengths, successes, action_dim = [], [], 0
    for ep, arrays in traj.iter_episodes():
        actions = arrays["actions"]
        lengths.append(int(actions.shape[0]))
        action_dim = int(actions.shape[1]) if actions.ndim == 2 else 1
        if "success" in arrays and len(arrays["success"]):
            successes.append(bool(arrays["success"][-1]))
        else:
            successes.append(bool(ep.get("success", False)))
    n = len(lengths)
    return TrajectoryInfo(
        path=str(traj.h5_path),
        env_id=traj.env_id,
        control_mode=traj.control_mode,
        obs_mode=str(traj.env_kwargs.get("obs_mode", "none")),
        episodes=n,
        success_rate=float(np.mean(successes)) if n else 0.0,
        length_min=min(lengths) if n else 0,
        length_mean=float(np.mean(lengths)) if n else 0.0,
        length_max=max(lengths) if n else 0,
        action_dim=action_dim,
    )
