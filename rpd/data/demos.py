"""Demonstrations: motion-planned generation and import of ManiSkill trajectories.

`generate_demos` runs ManiSkill's motion-planning solutions for the Panda arm (recorded in
`pd_joint_pos`) and converts each successful episode to rpd's control mode with ManiSkill's
controller conversion, keeping only episodes that still succeed after conversion. Work is
split into fixed blocks of seeds, so the result depends on (env, num, seed) and not on the
number of worker processes; finished blocks are kept on disk, so an interrupted run resumes.

Output directory (ManiSkill's naming, so downloaded and generated demos look alike):

    OUT/trajectory.h5 + .json                                   source, pd_joint_pos
    OUT/trajectory.none.{control_mode}.physx_cpu.h5 + .json     converted: what rpd trains on
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from rpd.data.parallel import run_in_processes
from rpd.data.seeds import DEMOS
from rpd.data.tasks import DEFAULT_CONTROL_MODE, get_task
from rpd.data.trajectories import (
    TrajectoryFile,
    json_path_for,
    open_trajectory,
    publish_pair,
)
from rpd.errors import InputError

logger = logging.getLogger(__name__)

SOURCE_CONTROL_MODE = "pd_joint_pos"
"""What ManiSkill's motion planner outputs."""
CONVERTIBLE_FROM = ("pd_joint_pos", "pd_joint_delta_pos")
"""Control modes ManiSkill's converter can translate to end-effector control."""
SEEDS_PER_BLOCK = 10_000
"""Block i of a run tries seeds seed + i*SEEDS_PER_BLOCK upward (disjoint across blocks); every
block stays in the seed plan's demos range (`rpd.data.seeds.DEMOS`)."""

Progress = Callable[[int], None]
"""Called with the number of newly finished successful episodes."""


def source_name() -> str:
    return "trajectory.h5"


def converted_name(control_mode: str) -> str:
    return f"trajectory.none.{control_mode}.physx_cpu.h5"


@dataclass
class GenerateConfig:
    """`rpd demos generate`.

    Attributes:
        env_id: Task with a ManiSkill motion-planning solution.
        num: Successful episodes to keep.
        out: Output directory.
        seed: First episode seed; the run is deterministic given (env_id, num, seed).
        workers: Parallel processes (each plans and converts its own block of seeds).
        control_mode: Control mode of the converted demos.
        block_size: Successful episodes per block of work (the unit of resume).
        max_attempts_factor: A block gives up after this many attempts per wanted episode.
        force: Overwrite finished demos already in `out`.
    """

    env_id: str
    num: int
    out: Path
    seed: int = 0
    workers: int = 1
    control_mode: str = DEFAULT_CONTROL_MODE
    block_size: int = 5
    max_attempts_factor: int = 10
    force: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        task = get_task(self.env_id)
        if not task.motion_planner:
            planned = [t.env_id for t in _tasks_with_planner()]
            raise InputError(
                f"--env {self.env_id}: ManiSkill has no motion-planning solution for it; "
                f"generate demos for one of {', '.join(planned)}, or `rpd demos import` "
                "downloaded ones"
            )
        if self.num <= 0:
            raise InputError(f"--num {self.num}: must be a positive number of episodes")
        if self.workers <= 0:
            raise InputError(f"--workers {self.workers}: must be at least 1")
        if self.block_size * self.max_attempts_factor > SEEDS_PER_BLOCK:
            raise InputError(f"--block-size {self.block_size}: a block tries up to "
                             f"{self.block_size * self.max_attempts_factor} seeds, more than "
                             f"the {SEEDS_PER_BLOCK} between blocks; use a smaller block")
        DEMOS.check(self.seed, len(self.blocks) * SEEDS_PER_BLOCK, "--seed")

    @property
    def blocks(self) -> list[tuple[int, int, int]]:
        """(block index, first seed, wanted successes) for every block of this run."""
        out, left, i = [], self.num, 0
        while left > 0:
            k = min(self.block_size, left)
            out.append((i, self.seed + i * SEEDS_PER_BLOCK, k))
            left -= k
            i += 1
        return out


@dataclass
class DemoResult:
    """What a generate/import run produced."""

    path: Path
    source_path: Path | None
    episodes: int
    attempts: int = 0
    planning_failures: int = 0
    conversion_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _tasks_with_planner() -> list[Any]:
    from rpd.data.tasks import TASKS

    return [t for t in TASKS.values() if t.motion_planner]


# --------------------------------------------------------------------------------------------
# Worker side: runs in a fresh (spawned) process.
# --------------------------------------------------------------------------------------------


class _ActionLog(gym.Wrapper):
    """Gym wrapper that remembers the actions of the current episode."""

    def reset(self, **kwargs: Any) -> Any:
        self.actions: list[Any] = []
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        self.actions.append(action)
        return self.env.step(action)


def _quiet() -> contextlib.ExitStack:
    """Silence stdout (ManiSkill's planner prints) inside a worker."""
    stack = contextlib.ExitStack()
    devnull = stack.enter_context(open(os.devnull, "w"))
    stack.enter_context(contextlib.redirect_stdout(devnull))
    return stack


def _converter_envs(env_id: str, env_kwargs: dict[str, Any], source_mode: str, target_mode: str,
                    out_dir: Path, name: str) -> tuple[Any, Any]:
    """(source-mode env to step original actions, target-mode env recording its episodes)."""
    from mani_skill.utils.wrappers.record import RecordEpisode

    kwargs = {k: v for k, v in env_kwargs.items() if k not in ("num_envs",)}
    kwargs.update(sim_backend="physx_cpu", render_backend="cpu", obs_mode="none")
    kwargs.pop("render_mode", None)
    ori_env = gym.make(env_id, **{**kwargs, "control_mode": source_mode})
    env = gym.make(env_id, **{**kwargs, "control_mode": target_mode})
    env = RecordEpisode(env, str(out_dir), trajectory_name=name, save_video=False,
                        save_on_reset=False, record_reward=False,
                        source_type="motionplanning",
                        source_desc="ManiSkill motion planning, converted by rpd")
    return ori_env, env


def _convert_episode(ori_env: Any, env: Any, source_mode: str, target_mode: str, actions: Any,
                     reset_kwargs: dict[str, Any], first_state: dict[str, Any] | None) -> bool:
    """Replay one episode's actions in `target_mode`; True when the converted episode succeeds.

    On success the converted episode is flushed to the recorder; otherwise it is discarded.
    """
    from mani_skill.trajectory.utils.actions import conversion

    env.reset(**reset_kwargs)
    ori_env.reset(**reset_kwargs)
    if first_state is not None:
        ori_env.unwrapped.set_state_dict(first_state)
        env.unwrapped.set_state_dict(first_state)
    convert = {
        "pd_joint_pos": conversion.from_pd_joint_pos,
        "pd_joint_delta_pos": conversion.from_pd_joint_delta_pos,
    }[source_mode]
    try:
        info = convert(target_mode, actions, ori_env, env, render=False, pbar=None, verbose=False)
    except Exception as e:  # the converter asserts on unreachable poses
        logger.debug("conversion failed: %s", e)
        info = {}
    success = bool(_scalar(info.get("success", False)))
    env.flush_trajectory(save=success)
    return success


def _scalar(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def block_tmp_prefix(block: int) -> str:
    """Prefix of a block's temporary directory. No dot before the random suffix: ManiSkill's
    recorder derives its .json path with `str.replace(".h5", ".json")` on the whole path, so a
    directory `.block_1.h5xxxxxx` (a random suffix starting "h5") sent the JSON elsewhere and
    failed the block."""
    return f".block_{block}_"


def _generate_block(env_id: str, block: int, first_seed: int, wanted: int, max_attempts: int,
                    target_mode: str, parts_dir: str, progress: Any) -> dict[str, Any]:
    """Plan and convert episodes from `first_seed` upward until `wanted` succeed.

    Writes parts_dir/block_{block}/{source,converted}.h5 (+.json) atomically (the block dir is
    renamed into place when complete) and returns its statistics.
    """
    import mani_skill.envs  # noqa: F401
    from mani_skill.examples.motionplanning.panda.run import MP_SOLUTIONS
    from mani_skill.utils.wrappers.record import RecordEpisode

    from rpd.data.devices import limit_cpu_threads

    limit_cpu_threads()
    final_dir = Path(parts_dir) / f"block_{block}"
    tmp_dir = Path(tempfile.mkdtemp(prefix=block_tmp_prefix(block), dir=parts_dir))
    solve = MP_SOLUTIONS[env_id]
    base_kwargs = dict(obs_mode="none", sim_backend="physx_cpu", render_backend="cpu")
    plan_env = RecordEpisode(
        gym.make(env_id, control_mode=SOURCE_CONTROL_MODE, **base_kwargs),
        str(tmp_dir), trajectory_name="source", save_video=False, save_on_reset=False,
        record_reward=False, source_type="motionplanning",
        source_desc="official ManiSkill motion planning solution, run by rpd",
    )
    plan_env = _ActionLog(plan_env)
    ori_env, conv_env = _converter_envs(env_id, base_kwargs, SOURCE_CONTROL_MODE, target_mode,
                                        tmp_dir, "converted")
    stats = dict(block=block, attempts=0, planning_failures=0, conversion_failures=0, kept=0)
    seed = first_seed
    with _quiet():
        while stats["kept"] < wanted:
            if stats["attempts"] >= max_attempts:
                break
            stats["attempts"] += 1
            try:
                res = solve(plan_env, seed=seed, debug=False, vis=False)
            except Exception as e:  # planner errors are a failed attempt, as in ManiSkill
                logger.debug("seed %d: planning error %s", seed, e)
                res = -1
            planned = res != -1 and bool(_scalar(res[-1]["success"]))
            recorder = plan_env.env
            if not planned:
                stats["planning_failures"] += 1
                recorder.flush_trajectory(save=False)
                seed += 1
                continue
            actions = [a if not hasattr(a, "cpu") else a.cpu().numpy() for a in plan_env.actions]
            if _convert_episode(ori_env, conv_env, SOURCE_CONTROL_MODE, target_mode, actions,
                                dict(seed=seed), None):
                recorder.flush_trajectory(save=True)
                stats["kept"] += 1
                if progress is not None:
                    progress.put(1)
            else:
                stats["conversion_failures"] += 1
                recorder.flush_trajectory(save=False)
            seed += 1
    for e in (plan_env, ori_env, conv_env):
        e.close()
    (tmp_dir / "stats.json").write_text(json.dumps(stats))
    if stats["kept"] == wanted:
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.rename(final_dir)
    else:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return stats


def _convert_file_part(h5_path: str, episode_ids: list[int], target_mode: str, out_dir: str,
                       part: int, progress: Any) -> dict[str, Any]:
    """Convert the given episodes of a trajectory file to `target_mode` (worker side)."""
    import mani_skill.envs  # noqa: F401

    from rpd.data.devices import limit_cpu_threads

    limit_cpu_threads()
    traj = open_trajectory(h5_path)
    wanted = set(episode_ids)
    name = f"part_{part}"
    ori_env, conv_env = _converter_envs(traj.env_id, traj.env_kwargs, traj.control_mode,
                                        target_mode, Path(out_dir), name)
    stats = dict(part=part, attempts=0, conversion_failures=0, kept=0)
    with _quiet():
        for ep, arrays in traj.iter_episodes():
            if ep["episode_id"] not in wanted:
                continue
            stats["attempts"] += 1
            reset_kwargs = dict(ep.get("reset_kwargs") or {})
            reset_kwargs.setdefault("seed", ep.get("episode_seed"))
            if isinstance(reset_kwargs.get("seed"), list):
                reset_kwargs["seed"] = reset_kwargs["seed"][0]
            first_state = traj.env_state(ep["episode_id"], 0)
            if _convert_episode(ori_env, conv_env, traj.control_mode, target_mode,
                                arrays["actions"], reset_kwargs, first_state):
                stats["kept"] += 1
            else:
                stats["conversion_failures"] += 1
            if progress is not None:
                progress.put(1)
    ori_env.close()
    conv_env.close()
    return stats


# --------------------------------------------------------------------------------------------
# Driver side.
# --------------------------------------------------------------------------------------------


def _merge(parts: list[Path], out_h5: Path) -> int:
    """Merge trajectory files into `out_h5` (+ .json), renumbering episodes; atomic on success."""
    import h5py

    tmp = out_h5.with_name(f".{out_h5.name}.tmp")
    merged: dict[str, Any] = {"episodes": []}
    count = 0
    with h5py.File(tmp, "w") as dst:
        for part in parts:
            meta = json.loads(json_path_for(part).read_text())
            for key, value in meta.items():
                if key != "episodes":
                    merged.setdefault(key, value)
            with h5py.File(part, "r") as src:
                for ep in meta["episodes"]:
                    src.copy(f"traj_{ep['episode_id']}", dst, f"traj_{count}")
                    merged["episodes"].append({**ep, "episode_id": count})
                    count += 1
    publish_pair(tmp, merged, out_h5)
    return count


def _check_out_dir(out: Path, files: list[Path], force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory; choose another --out")
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise InputError(
            f"--out {out}: already holds {existing[0].name}; pass --force to overwrite it "
            "or choose another --out"
        )


def run_manifest(cfg: GenerateConfig) -> dict[str, Any]:
    """What identifies a generate run: unfinished parts of a run with another manifest are
    discarded instead of resumed."""
    return dict(env_id=cfg.env_id, num=cfg.num, seed=cfg.seed, control_mode=cfg.control_mode,
                block_size=cfg.block_size)


def generate_demos(cfg: GenerateConfig, progress: Progress | None = None) -> DemoResult:
    """Generate `cfg.num` successful motion-planning demos, converted to `cfg.control_mode`.

    Resumable: finished blocks stay in OUT/.parts until the final merge, and a re-run with the
    same (env, num, seed, control mode) reuses them.
    """
    out = cfg.out
    src_path, conv_path = out / source_name(), out / converted_name(cfg.control_mode)
    _check_out_dir(out, [conv_path, src_path], cfg.force)
    parts_dir = out / ".parts"
    manifest = run_manifest(cfg)
    manifest_path = parts_dir / "manifest.json"
    if parts_dir.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != manifest:
            logger.info("discarding unfinished parts of another run in %s", parts_dir)
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest))

    blocks = cfg.blocks
    todo = [b for b in blocks if not (parts_dir / f"block_{b[0]}" / "converted.h5").exists()]
    done_eps = sum(b[2] for b in blocks if b not in todo)
    if done_eps:
        logger.info("resuming: %d of %d episodes already generated", done_eps, cfg.num)
        if progress is not None:
            progress(done_eps)
    jobs = [
        (_generate_block, (cfg.env_id, i, first, k, k * cfg.max_attempts_factor,
                           cfg.control_mode, str(parts_dir)))
        for i, first, k in todo
    ]
    stats = run_in_processes(jobs, cfg.workers, progress) if jobs else []
    wanted = {i: k for i, _, k in blocks}
    failed = [s for s in stats if s["kept"] < wanted[s["block"]]]
    if failed:
        s = failed[0]
        raise InputError(
            f"--env {cfg.env_id}: motion planning succeeded in only {s['kept']} of "
            f"{s['attempts']} attempts for seed block {s['block']}; this task's planner is "
            "unreliable: ask for fewer demos or raise the attempt limit"
        )
    block_dirs = [parts_dir / f"block_{i}" for i, _, _ in blocks]
    all_stats = [json.loads((d / "stats.json").read_text()) for d in block_dirs]
    out.mkdir(parents=True, exist_ok=True)
    n = _merge([d / "converted.h5" for d in block_dirs], conv_path)
    _merge([d / "source.h5" for d in block_dirs], src_path)
    shutil.rmtree(parts_dir)
    return DemoResult(
        path=conv_path, source_path=src_path, episodes=n,
        attempts=sum(s["attempts"] for s in all_stats),
        planning_failures=sum(s["planning_failures"] for s in all_stats),
        conversion_failures=sum(s["conversion_failures"] for s in all_stats),
    )


@dataclass
class ImportConfig:
    """`rpd demos import`.

    Attributes:
        src: A ManiSkill trajectory .h5 (its .json beside it).
        out: Output directory.
        control_mode: Control mode to convert to.
        workers: Parallel conversion processes.
        force: Overwrite a converted file already in `out`.
    """

    src: Path
    out: Path
    control_mode: str = DEFAULT_CONTROL_MODE
    workers: int = 1
    force: bool = False

    def __post_init__(self) -> None:
        self.src, self.out = Path(self.src), Path(self.out)
        if self.workers <= 0:
            raise InputError(f"--workers {self.workers}: must be at least 1")


def import_demos(cfg: ImportConfig, progress: Progress | None = None) -> DemoResult:
    """Validate a ManiSkill trajectory file and convert it to `cfg.control_mode` in `cfg.out`.

    Episodes whose conversion no longer succeeds are dropped (and counted).
    """
    traj: TrajectoryFile = open_trajectory(cfg.src, option="FILE")
    get_task(traj.env_id, option=f"{traj.json_path} env_info.env_id")
    out_path = cfg.out / converted_name(cfg.control_mode)
    if out_path.resolve() == traj.h5_path.resolve():
        raise InputError(f"--out {cfg.out}: would overwrite the input {cfg.src}; choose another")
    _check_out_dir(cfg.out, [out_path], cfg.force)
    if not traj.episodes:
        raise InputError(f"{traj.json_path}: lists no episodes; nothing to import")
    mode = traj.control_mode
    cfg.out.mkdir(parents=True, exist_ok=True)
    if mode == cfg.control_mode:
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        shutil.copyfile(traj.h5_path, tmp)
        publish_pair(tmp, traj.meta, out_path)
        if progress is not None:
            progress(len(traj.episodes))
        return DemoResult(path=out_path, source_path=traj.h5_path, episodes=len(traj.episodes),
                          attempts=len(traj.episodes))
    if mode not in CONVERTIBLE_FROM:
        raise InputError(
            f"{cfg.src}: control mode {mode!r} cannot be converted to {cfg.control_mode!r}; "
            f"ManiSkill converts from {' or '.join(CONVERTIBLE_FROM)}: import that version"
        )
    ids = [ep["episode_id"] for ep in traj.episodes]
    n_parts = max(1, min(cfg.workers, len(ids)))
    chunks = [ids[i::n_parts] for i in range(n_parts)]
    with tempfile.TemporaryDirectory(prefix=".import.", dir=cfg.out) as tmp_dir:
        jobs = [(_convert_file_part, (str(traj.h5_path), chunk, cfg.control_mode, tmp_dir, i))
                for i, chunk in enumerate(chunks)]
        stats = run_in_processes(jobs, cfg.workers, progress)
        kept = sum(s["kept"] for s in stats)
        if kept == 0:
            raise InputError(
                f"{cfg.src}: no episode still succeeds after conversion to {cfg.control_mode}; "
                "check that the file's episodes are successful demonstrations"
            )
        parts = [Path(tmp_dir) / f"part_{i}.h5" for i in range(n_parts)]
        n = _merge([p for p in parts if p.exists()], out_path)
    return DemoResult(path=out_path, source_path=traj.h5_path, episodes=n,
                      attempts=len(ids),
                      conversion_failures=sum(s["conversion_failures"] for s in stats))


def result_dict(result: DemoResult) -> dict[str, Any]:
    d = asdict(result)
    d["path"] = str(result.path)
    d["source_path"] = str(result.source_path) if result.source_path else None
    return d
