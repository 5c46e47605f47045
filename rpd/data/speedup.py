"""Fast demos: merge consecutive end-effector deltas, keep the episodes whose replay succeeds.

ManiSkill's motion planner moves slowly (joint velocity and acceleration limits 0.75-0.9), so
its demos take 60-80 steps on PushCube and PickCube while students train at a 50-step
horizon, and a teacher imitating them is as slow. In the end-effector
delta control mode an action is a pose change per control step, so K consecutive actions
merged into one (their arm deltas summed, clipped to the action bounds; the last gripper
command) ask for the same motion in 1/K of the steps. The PD controller may not follow a
larger step exactly, so each merged episode is replayed from the demo's first state, ended at
its first success (where the task's episode ends too) and kept only if it gets there; the
replay's own states and actions are what the output file records.

    speed_up(SpeedupConfig(src=converted.h5, factor=2)) -> OUT/trajectory.x2.none.<mode>...
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.trajectories import json_path_for, open_trajectory, publish_pair
from rpd.errors import InputError

logger = logging.getLogger(__name__)

EE_DELTA_MODES = ("pd_ee_delta_pose", "pd_ee_delta_pos")
"""Control modes whose arm action is a per-step end-effector delta (mergeable by summing)."""
MAX_FACTOR = 8


def merge_actions(actions: np.ndarray, factor: int, low: float = -1.0,
                  high: float = 1.0) -> np.ndarray:
    """Merge every `factor` consecutive actions into one.

    Args:
        actions: [T, A] normalised actions; the last dim is the gripper, the rest arm deltas.
        factor: K >= 1.
        low, high: The action bounds the merged arm deltas are clipped to.

    Returns:
        [ceil(T / K), A]: arm dims summed over each group of K (the last group may be
        shorter), clipped; gripper = the group's last command.
    """
    actions = np.asarray(actions, np.float32)
    t = len(actions)
    starts = np.arange(0, t, factor)
    arm = np.add.reduceat(actions[:, :-1], starts, axis=0) if t else actions[:, :-1]
    gripper = actions[np.minimum(starts + factor, t) - 1, -1:] if t else actions[:, -1:]
    return np.concatenate([np.clip(arm, low, high), gripper], axis=1).astype(np.float32)


@dataclass
class SpeedupConfig:
    """`rpd demos speedup`.

    Attributes:
        src: Converted demos (.h5 + .json) in an end-effector delta control mode.
        factor: K, consecutive actions merged into one (2..8).
        out: Output .h5 (its .json beside it); None = `trajectory.x{K}.<src name>` in the
            source's directory.
        force: Overwrite an existing output.
    """

    src: Path
    factor: int
    out: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        self.src = Path(self.src)
        if not 2 <= self.factor <= MAX_FACTOR:
            raise InputError(f"--factor {self.factor}: use 2..{MAX_FACTOR} (consecutive "
                             "actions merged into one)")
        if self.out is None:
            name = self.src.name
            stem = name[len("trajectory."):] if name.startswith("trajectory.") else name
            self.out = self.src.with_name(f"trajectory.x{self.factor}.{stem}")
        self.out = Path(self.out)
        if self.out.suffix != ".h5":
            raise InputError(f"--out {self.out}: must end in .h5 (its .json goes beside it)")
        if self.out.exists() and not self.force:
            raise InputError(f"--out {self.out}: exists; pass --force to overwrite it")


@dataclass
class SpeedupResult:
    """What `speed_up` wrote: episode counts and lengths before and after."""

    path: Path
    episodes: int
    kept: int
    length_before: float
    length_after: float

    def to_dict(self) -> dict[str, Any]:
        return dict(path=str(self.path), episodes=self.episodes, kept=self.kept,
                    length_before=self.length_before, length_after=self.length_after)


def speed_up(cfg: SpeedupConfig, progress: Callable[[int], None] | None = None
             ) -> SpeedupResult:
    """Merge each episode's actions by `cfg.factor`, replay, keep the successful replays."""
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401
    from mani_skill.utils.wrappers.record import RecordEpisode

    from rpd.data.demos import _quiet, _scalar

    traj = open_trajectory(cfg.src, option="FILE")
    mode = traj.control_mode
    if mode not in EE_DELTA_MODES:
        raise InputError(f"{cfg.src}: its control mode is {mode}; speedup merges end-effector "
                         f"deltas ({', '.join(EE_DELTA_MODES)}): convert it first with "
                         "`rpd demos import --control-mode pd_ee_delta_pose`")
    assert cfg.out is not None
    tmp = Path(tempfile.mkdtemp(prefix=".speedup_", dir=cfg.out.parent))
    dropped = ("num_envs", "render_mode", "sensor_configs", "human_render_camera_configs")
    kwargs = {k: v for k, v in traj.env_kwargs.items() if k not in dropped}
    kwargs.update(control_mode=mode, obs_mode="none", sim_backend="physx_cpu",
                  render_backend="cpu")
    env = RecordEpisode(gym.make(traj.env_id, **kwargs), str(tmp), trajectory_name="fast",
                        save_video=False, save_on_reset=False, record_reward=False,
                        source_type="motionplanning",
                        source_desc=f"{cfg.src.name} with every {cfg.factor} actions merged "
                                    "(rpd demos speedup)")
    space = env.action_space
    before, after, kept, total = [], [], 0, 0
    try:
        with _quiet():
            for ep, arrays in traj.iter_episodes():
                total += 1
                actions = merge_actions(arrays["actions"], cfg.factor,
                                        float(np.min(space.low)), float(np.max(space.high)))
                reset_kwargs = dict(ep.get("reset_kwargs") or {})
                reset_kwargs.setdefault("seed", ep.get("episode_seed"))
                if isinstance(reset_kwargs.get("seed"), list):
                    reset_kwargs["seed"] = reset_kwargs["seed"][0]
                env.reset(**reset_kwargs)
                first = traj.env_state(ep["episode_id"], 0)
                if first is not None:
                    env.unwrapped.set_state_dict(first)
                success, steps = False, 0
                for a in actions:
                    _, _, _, _, info = env.step(a)
                    steps += 1
                    if bool(_scalar(info.get("success", False))):
                        success = True  # the task ends at success: so does the fast demo
                        break
                env.flush_trajectory(save=success)
                before.append(len(arrays["actions"]))
                if success:
                    kept += 1
                    after.append(steps)
                if progress is not None:
                    progress(1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        env.close()
    if kept == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"{cfg.src}: no episode still succeeds with every {cfg.factor} "
                         "actions merged; try a smaller --factor")
    _publish(tmp / "fast.h5", cfg.out)
    shutil.rmtree(tmp, ignore_errors=True)
    return SpeedupResult(cfg.out, total, kept, float(np.mean(before)), float(np.mean(after)))


def _publish(h5: Path, out: Path) -> None:
    """Move the replay's .h5 and .json into place as a pair."""
    meta = json.loads(json_path_for(h5).read_text())
    meta.setdefault("rpd", {})["speedup"] = True
    publish_pair(h5, meta, out)


__all__ = ["SpeedupConfig", "SpeedupResult", "merge_actions", "speed_up"]
