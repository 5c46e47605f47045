"""`rpd report`: learning curves and a results table from `rpd train` run directories.

Runs are grouped by (task, method, teacher, reward mode); seeds of a group are repeats. A
method is "rpd" or "ppo" (`--no-teacher`); runs of one such group whose other training options
differ (e.g. λ, --distill, --cache) form separate groups, labelled with the differing options.

Output directory:

    OUT/report.md        one table row per group (and the settings behind the numbers)
    OUT/report.json      the same numbers, per seed as well, plus each group's mean curve
    OUT/<ENV>.png        per task: eval success vs env steps, mean over seeds with a min-max
                         (or ±std) band per group, each teacher's success as a dashed line

The teacher's success comes from a `rpd eval --teacher` JSON: given with `teacher_evals`, or
found in the teacher directory a run's config.json names (TEACHER/eval/ENV-hH.json; with
several horizons, the one equal to the student's evaluation horizon, else the longest).
An evaluation counts for a group only when the teacher saw what the group's teacher saw: the
same camera shift and object colour (`--teacher-camera-shift`, `--teacher-object-color`), so a
student of a shifted teacher is compared with that teacher's success in the shifted view.

Definitions (per group; see the functions below):
    final success        each seed's last eval.csv row; mean, std (population), min, max
    held-out IQM         interquartile mean of the seeds' held-out success with a 95 %
                         stratified-bootstrap confidence interval (`iqm_interval`, rliable)
    best checkpoint      finished seeds' best-evaluation policies (checkpoints/best.zip)
                         scored held out (RUN/eval/ENV-hH-best-heldout.json), a table of its own
    steps to X           first eval step at which the mean curve over seeds reaches success
                         ≥ X (`steps_to_threshold`), and the same per seed
    live calls / step    each seed's final live_teacher_calls / final env step, averaged
    wall-clock           each seed's wall time (student.json, else its last eval row), averaged
    steps/s              student.json's train_steps_per_s (env steps/s of training, evals
                         excluded; for a resumed run, of its last invocation), averaged
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.rundir import (
    CONFIG_JSON,
    EVAL_CSV,
    EVAL_DIR,
    STUDENT_JSON,
    heldout_path,
    teacher_eval_path,
)
from rpd.errors import InputError
from rpd.pipeline.train_config import ABSENT_MEANS, TEACHER_ONLY_FIELDS, VARIANT_FIELDS

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
DEFAULT_THRESHOLDS = (0.6, 0.8)
BANDS = ("minmax", "std")
DEFAULT_TASK_HORIZON = 50
"""ManiSkill's episode limit for the tabletop tasks, used when a run's config says None."""

_EVAL_COLUMNS = ("step", "success", "return", "wall_time_s", "live_teacher_calls")


@dataclass
class ReportConfig:
    """`rpd report`.

    Attributes:
        runs: `rpd train` run directories (each with config.json and eval.csv).
        out: Output directory (created; report files in it are replaced).
        teacher_evals: `rpd eval --teacher` JSONs to draw as the teacher's success; when empty,
            each run's teacher directory is searched for one (TEACHER/eval/ENV-hH.json).
        thresholds: Success levels whose first crossing is reported in env steps.
        band: Spread drawn around each mean curve: "minmax" over seeds or "std" (±1 std).
    """

    runs: list[Path]
    out: Path
    teacher_evals: list[Path] = field(default_factory=list)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    band: str = "minmax"

    def __post_init__(self) -> None:
        self.runs = [Path(r) for r in self.runs]
        self.out = Path(self.out)
        self.teacher_evals = [Path(p) for p in self.teacher_evals]
        self.thresholds = tuple(float(t) for t in self.thresholds)
        if not self.runs:
            raise InputError("give at least one run directory (RUN...) written by `rpd train`")
        for t in self.thresholds:
            if not 0.0 < t <= 1.0:
                raise InputError(f"--threshold {t}: must be in (0, 1]")
        if self.band not in BANDS:
            raise InputError(f"--band {self.band!r}: use one of {', '.join(BANDS)}")
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out}: exists and is not a directory")


# ---------------------------------------------------------------- pure functions (unit-tested)


def steps_to_threshold(steps: Sequence[float], success: Sequence[float],
                       threshold: float) -> int | None:
    """First env step at which success reaches `threshold`.

    Args:
        steps: Eval steps [T], increasing.
        success: Success rate at those steps [T].
        threshold: Success level in (0, 1].

    Returns:
        The first `steps[i]` with `success[i] >= threshold`, or None if never reached.
    """
    for s, v in zip(steps, success, strict=True):
        if v >= threshold - 1e-12:
            return int(s)
    return None


def align_curves(curves: Sequence[tuple[Sequence[float], Sequence[float]]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Put several seeds' eval curves on one step grid.

    The grid is the union of all eval steps from the latest first eval to the earliest last eval
    (the range every seed covers); each seed's value at a grid step is its latest eval at or
    before it (seeds of one configuration evaluate at the same steps, so usually nothing is
    carried).

    Args:
        curves: Per seed (steps [T_i], success [T_i]), steps increasing.

    Returns:
        steps [G] and values [S, G].
    """
    lo = max(float(s[0]) for s, _ in curves)
    hi = min(float(s[-1]) for s, _ in curves)
    grid = np.unique(np.concatenate([np.asarray(s, dtype=float) for s, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    values = np.empty((len(curves), len(grid)))
    for i, (s, v) in enumerate(curves):
        idx = np.searchsorted(np.asarray(s, dtype=float), grid, side="right") - 1
        values[i] = np.asarray(v, dtype=float)[idx]
    return grid, values


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, population std, min and max of the non-None values (None where there are none).

    Args:
        values: One number per seed [S] (None = not available for that seed).

    Returns:
        dict(mean, std, min, max, n, per_seed).
    """
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return dict(mean=None, std=None, min=None, max=None, n=0, per_seed=list(values))
    a = np.asarray(xs)
    return dict(mean=float(a.mean()), std=float(a.std()), min=float(a.min()),
                max=float(a.max()), n=len(xs), per_seed=list(values))


IQM_BOOTSTRAP_REPS = 10000
IQM_BOOTSTRAP_SEED = 0
"""The bootstrap is seeded, so a report regenerated from the same runs is the same report."""


def iqm_interval(values: Sequence[float | None]) -> dict[str, Any]:
    """Interquartile mean of per-seed scores with a 95 % bootstrap confidence interval.

    The interquartile mean (the mean of the middle half of the seeds: scipy's `trim_mean`
    cuts int(n/4) seeds off each end) is the aggregate rliable recommends for few-seed RL
    results: less swayed by one lucky or failed seed than the mean, less coarse than the median.
    With fewer than four seeds nothing is cut and it equals the mean. The interval is rliable's
    percentile bootstrap over seeds.

    Args:
        values: One score per seed [S] (None or NaN = not available for that seed).

    Returns:
        dict(iqm, low, high, n): low/high are None with fewer than two seeds (one seed gives
        no interval).
    """
    xs = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if len(xs) == 0:
        return dict(iqm=None, low=None, high=None, n=0)
    from scipy.stats import trim_mean

    iqm = float(trim_mean(xs, 0.25))
    if len(xs) < 2:
        return dict(iqm=iqm, low=None, high=None, n=1)
    from rliable import library as rly
    from rliable import metrics

    # rliable draws its resamples from NumPy's global generator (its random_state argument
    # does not reach them): seed it for the bootstrap and put the caller's state back.
    saved = np.random.get_state()
    np.random.seed(IQM_BOOTSTRAP_SEED)
    try:
        _, ci = rly.get_interval_estimates(
            {"scores": xs[:, None]}, lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=IQM_BOOTSTRAP_REPS)
    finally:
        np.random.set_state(saved)
    low, high = ci["scores"][:, 0]
    return dict(iqm=iqm, low=float(low), high=float(high), n=len(xs))


def rewound_rows(rows: np.ndarray) -> np.ndarray:
    """eval.csv rows [N, C] (step first) as the run's final history.

    A resumed run restarts from its last checkpoint, which may be older than its last eval row
    (killed between the two, or resumed once more after finishing): it then evaluates steps it
    had evaluated before. A row supersedes every earlier row of the same or a later step.

    Returns:
        The surviving rows [M, C], steps strictly increasing.
    """
    kept: list[np.ndarray] = []
    for row in rows:
        while kept and kept[-1][0] >= row[0]:
            kept.pop()
        kept.append(row)
    return np.asarray(kept).reshape(-1, rows.shape[1])


# ---------------------------------------------------------------- reading run directories


@dataclass
class RunRecord:
    """One `rpd train` run directory, read and validated."""

    path: Path
    config: dict[str, Any]
    steps: np.ndarray
    success: np.ndarray
    ret: np.ndarray
    wall_time_s: np.ndarray
    live_teacher_calls: np.ndarray
    student: dict[str, Any] | None
    """student.json, present once the run finished."""
    held_out: dict[str, Any] | None = None
    """`rpd eval --student RUN --held-out`'s result, when it scores the final policy."""
    best_held_out: dict[str, Any] | None = None
    """`rpd eval --student RUN --checkpoint best --held-out`'s result, when it scores the
    policy of the run's best evaluation (`best_step`)."""

    @property
    def env_id(self) -> str:
        return str(self.config["env_id"])

    @property
    def method(self) -> str:
        return "ppo" if self.config.get("no_teacher") else "rpd"

    @property
    def teacher(self) -> str | None:
        t = self.config.get("teacher")
        return None if self.method == "ppo" or t is None else os.path.normpath(str(t))

    @property
    def teacher_fingerprint(self) -> str | None:
        t = (self.student or {}).get("teacher") or {}
        return t.get("fingerprint")

    @property
    def teacher_checkpoint_fingerprint(self) -> str | None:
        """The fingerprint the teacher's evaluations name: its checkpoint's, whatever view the
        run showed it (None for a run of a changed view from before rpd recorded it)."""
        t = (self.student or {}).get("teacher") or {}
        if t.get("checkpoint_fingerprint"):
            return t["checkpoint_fingerprint"]
        return t.get("fingerprint") if _view(self.config) == (0.0, None) else None

    @property
    def horizon(self) -> int:
        return int(self.config.get("horizon") or DEFAULT_TASK_HORIZON)

    @property
    def best_step(self) -> int:
        """The step of the best evaluation, the one checkpoints/best.zip holds (a tie keeps the
        earlier, as `rpd train` does)."""
        return int(self.steps[int(np.argmax(self.success))])


def read_run(path: Path) -> RunRecord:
    """Read a run directory's config.json, eval.csv and (if finished) student.json.

    Raises:
        InputError: not a directory, no config.json (not a run), no/empty/malformed eval.csv.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"RUN {path}: no such directory; pass run directories written by "
                         "`rpd train --out`")
    cfg_path = path / CONFIG_JSON
    if not cfg_path.is_file():
        raise InputError(f"RUN {path}: not an `rpd train` run directory (no config.json)")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"RUN {path}: config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict) or "env_id" not in config:
        raise InputError(f"RUN {path}: config.json has no env_id; is this an `rpd train` run?")
    csv_path = path / EVAL_CSV
    if not csv_path.is_file():
        raise InputError(f"RUN {path}: no eval.csv; the run has not been started by `rpd train` "
                         "or its directory is incomplete")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _EVAL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"RUN {path}: eval.csv lacks column(s) {', '.join(missing)}; "
                             f"expected {', '.join(_EVAL_COLUMNS)}")
        try:
            rows = [[float(r[c]) for c in _EVAL_COLUMNS] for r in reader]
        except (TypeError, ValueError):
            raise InputError(f"RUN {path}: eval.csv line {reader.line_num} is not numeric"
                             ) from None
    if not rows:
        raise InputError(f"RUN {path}: eval.csv has no evaluations yet; train past the first "
                         "--eval-every steps (or leave this run out)")
    a = rewound_rows(np.asarray(rows))
    if len(a) < len(rows):
        logger.info("%s: %d eval.csv row(s) superseded by a resumed run", path,
                    len(rows) - len(a))
    if np.any((a[:, 1] < 0) | (a[:, 1] > 1)):
        raise InputError(f"RUN {path}: eval.csv success values outside [0, 1]")
    student = None
    if (path / STUDENT_JSON).is_file():
        try:
            student = json.loads((path / STUDENT_JSON).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"RUN {path}: student.json is not valid JSON ({e})") from None
    run = RunRecord(path=path, config=config, steps=a[:, 0].astype(np.int64), success=a[:, 1],
                    ret=a[:, 2], wall_time_s=a[:, 3],
                    live_teacher_calls=a[:, 4].astype(np.int64), student=student)
    if student is not None:  # a held-out file of an earlier, shorter run is left out
        run.held_out = _read_held_out(run, "final", student.get("metrics", {}).get("steps"))
        run.best_held_out = _read_held_out(run, "best", run.best_step)
    return run


def _read_held_out(run: RunRecord, checkpoint: str, step: int | None) -> dict[str, Any] | None:
    """The run's held-out result for `checkpoint` ("final" or "best"), if it scores the policy
    of `step`."""
    held = heldout_path(run.path, run.env_id, run.horizon, checkpoint)
    if not held.is_file():
        return None
    again = (f"`rpd eval --student {run.path} --env {run.env_id}"
             + ("" if checkpoint == "final" else f" --checkpoint {checkpoint}") + " --held-out`")
    try:
        h = json.loads(held.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"RUN {run.path}: {held} is not valid JSON ({e}); run {again} "
                         "again") from None
    if isinstance(h, dict) and h.get("step") == step:
        return h
    logger.warning("%s scores the policy of step %s, not the %s policy (step %s): left out; "
                   "run %s again", held, h.get("step") if isinstance(h, dict) else None,
                   checkpoint, step, again)
    return None


def read_teacher_eval(path: Path, option: str = "--teacher-eval") -> dict[str, Any]:
    """Read a `rpd eval --teacher` JSON (needs env_id, success_rate, horizon, episodes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file; `rpd eval --teacher T --env E` writes "
                         "T/eval/E-hH.json")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{option} {path}: not valid JSON ({e})") from None
    keys = ("env_id", "success_rate", "horizon", "episodes")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise InputError(f"{option} {path}: not an `rpd eval --teacher` result (needs "
                         f"{', '.join(keys)})")
    return dict(success=float(d["success_rate"]), horizon=int(d["horizon"]),
                episodes=int(d["episodes"]), env_id=str(d["env_id"]),
                fingerprint=d.get("fingerprint"), teacher=d.get("teacher"),
                camera_shift=float(d.get("camera_shift") or 0.0),
                object_color=d.get("object_color"), path=str(path))


def _view(d: dict[str, Any]) -> tuple[float, str | None]:
    """What the teacher saw, from an eval JSON's or a run config's fields."""
    shift = d.get("camera_shift", d.get("teacher_camera_shift"))
    color = d.get("object_color", d.get("teacher_object_color"))
    return float(shift or 0.0), (str(color) if color else None)


def _view_words(view: tuple[float, str | None]) -> str:
    shift, color = view
    words = [f"camera {shift:+g}°"] if shift else []
    words += [f"{color} object"] if color else []
    return ", ".join(words) or "the task's own view"


def _discover_teacher_eval(teacher: str, env_id: str, horizon: int,
                           view: tuple[float, str | None] = (0.0, None)
                           ) -> dict[str, Any] | None:
    """The teacher dir's own eval JSON for `env_id` in `view` (prefer the student's horizon,
    else the longest), or None."""
    found = []
    for p in sorted((Path(teacher) / EVAL_DIR).glob(f"{env_id}-h*.json")):
        try:
            d = read_teacher_eval(p)
        except InputError as e:
            logger.warning("ignoring %s", e)
            continue
        # only the labelling-mode result on the teacher-evaluation seeds, named as `rpd eval
        # --teacher` names it in that view (not -heldout, -seedS, a chunk mode ...)
        if (d["env_id"] == env_id and _view(d) == view
                and p == teacher_eval_path(teacher, env_id, d["horizon"], *view)):
            found.append(d)
    if not found:
        return None
    same = [d for d in found if d["horizon"] == horizon]
    return same[0] if same else max(found, key=lambda d: d["horizon"])


# ---------------------------------------------------------------- grouping and statistics


@dataclass
class Group:
    """Seeds of one configuration."""

    env_id: str
    method: str
    teacher: str | None
    reward: str
    variant: dict[str, Any]
    runs: list[RunRecord]
    teacher_eval: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        name = self.method.upper() if self.method == "ppo" else "RPD"
        if self.teacher is not None:
            name += f" ({Path(self.teacher).name})"
        name += f", {self.reward}"
        if self.variant:  # what differs between the groups, in words
            name += ", " + ", ".join(f"{k.replace('_', ' ')} {_fmt_value(v)}"
                                     for k, v in self.variant.items())
        return name


def _fmt_value(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def _variant_value(run: RunRecord, field: str) -> Any:
    """`field` of the run's config as far as it makes the run different: None for an option a
    PPO run ignores; for an option its config.json lacks (an older run), what it trained with
    (`rpd.pipeline.train_config.ABSENT_MEANS`)."""
    if field in TEACHER_ONLY_FIELDS and run.method == "ppo":
        return None
    return run.config.get(field, ABSENT_MEANS.get(field))


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by (env, method, teacher, reward), split further by any other training option
    that differs inside a group (the variant fields of `TrainConfig`). Order: env, then ppo
    before rpd."""
    base: dict[tuple[Any, ...], list[RunRecord]] = {}
    for r in runs:
        key = (r.env_id, r.method, r.teacher, str(r.config.get("reward", "dense")))
        base.setdefault(key, []).append(r)
    groups = []
    for key in sorted(base, key=lambda k: (k[0], k[1], k[2] or "", k[3])):
        members = base[key]
        varying = [f for f in VARIANT_FIELDS
                   if len({json.dumps(_variant_value(m, f)) for m in members}) > 1]
        sub: dict[str, list[RunRecord]] = {}
        for m in members:
            sub.setdefault(json.dumps([_variant_value(m, f) for f in varying]), []).append(m)
        for vkey in sorted(sub):
            variant = dict(zip(varying, json.loads(vkey), strict=True))
            rs = sorted(sub[vkey], key=lambda r: (r.config.get("seed", 0), str(r.path)))
            seeds = [r.config.get("seed") for r in rs]
            if len(set(seeds)) < len(seeds):
                logger.warning("group %s has runs with the same seed: %s", key,
                               ", ".join(str(r.path) for r in rs))
            groups.append(Group(*key, variant=variant, runs=rs))
    return groups


def group_stats(group: Group, thresholds: Sequence[float]) -> dict[str, Any]:
    """The numbers of one group's row (see the module docstring for the definitions)."""
    rs = group.runs
    steps, values = align_curves([(r.steps, r.success) for r in rs])
    mean = values.mean(axis=0)
    final_steps = [int(r.steps[-1]) for r in rs]
    walls = [float((r.student or {}).get("metrics", {}).get("wall_time_s")
                   or r.wall_time_s[-1]) for r in rs]
    sps = [(r.student or {}).get("metrics", {}).get("train_steps_per_s") for r in rs]
    return dict(
        label=group.label, env_id=group.env_id, method=group.method, teacher=group.teacher,
        teacher_fingerprint=next((r.teacher_fingerprint for r in rs if r.teacher_fingerprint),
                                 None),
        reward=group.reward, variant=group.variant,
        runs=[str(r.path) for r in rs], seeds=[r.config.get("seed") for r in rs],
        n_seeds=len(rs), finished=sum(r.student is not None for r in rs),
        student_eval=dict(episodes=sorted({int(r.config.get("eval_episodes", 0)) for r in rs}),
                          horizon=sorted({r.horizon for r in rs})),
        teacher_eval=group.teacher_eval,
        final_step=spread(final_steps),
        final_success=spread([float(r.success[-1]) for r in rs]),
        heldout_success=spread([float(r.held_out["success"]) for r in rs
                                if r.held_out is not None]),
        heldout_iqm=iqm_interval([float(r.held_out["success"]) for r in rs
                                  if r.held_out is not None]),
        heldout_episodes=sorted({int(r.held_out["episodes"]) for r in rs
                                 if r.held_out is not None}),
        best_checkpoint=_best_checkpoint_stats([r for r in rs if r.best_held_out is not None]),
        steps_to={f"{t:g}": dict(mean_curve=steps_to_threshold(steps, mean, t),
                                 per_seed=[steps_to_threshold(r.steps, r.success, t)
                                           for r in rs])
                  for t in thresholds},
        live_teacher_calls_per_step=spread([int(r.live_teacher_calls[-1]) / max(int(r.steps[-1]),
                                                                                 1) for r in rs]),
        wall_time_s=spread(walls),
        steps_per_s=spread(sps),
        curve=dict(steps=[int(s) for s in steps], mean=mean.tolist(),
                   std=values.std(axis=0).tolist(), min=values.min(axis=0).tolist(),
                   max=values.max(axis=0).tolist()),
    )


def _best_checkpoint_stats(rs: Sequence[RunRecord]) -> dict[str, Any]:
    """The seeds' best-evaluation policies scored held out: the lever for a student that peaks
    and then swings or decays."""
    held = [float(r.best_held_out["success"]) for r in rs]  # type: ignore[index]
    return dict(n=len(rs), seeds=[r.config.get("seed") for r in rs],
                step=spread([r.best_step for r in rs]),
                eval_success=spread([float(r.success.max()) for r in rs]),
                heldout_success=spread(held), heldout_iqm=iqm_interval(held),
                heldout_episodes=sorted({int(r.best_held_out["episodes"])  # type: ignore[index]
                                         for r in rs}))


def _attach_teacher_evals(groups: list[Group], cfg: ReportConfig) -> dict[str, list[dict]]:
    """Set each RPD group's teacher_eval; return the reference lines to draw per env."""
    given = [read_teacher_eval(p) for p in cfg.teacher_evals]
    envs = {g.env_id for g in groups}
    lines: dict[str, list[dict[str, Any]]] = {e: [] for e in envs}
    for d in given:
        if d["env_id"] not in envs:
            raise InputError(f"--teacher-eval {d['path']}: evaluates {d['env_id']}, but no run "
                             f"is on that task (runs: {', '.join(sorted(envs))})")
    for g in groups:
        if g.method != "rpd":
            continue
        fps = {r.teacher_checkpoint_fingerprint for r in g.runs} - {None}
        view = _view(g.runs[0].config)
        if given:
            match = [d for d in given if d["env_id"] == g.env_id and _view(d) == view
                     and ((d["fingerprint"] in fps) if fps and d["fingerprint"]
                          else os.path.normpath(str(d["teacher"])) == g.teacher)]
            for d in match:
                d["used"] = True  # drawn, even if another horizon is the group's figure
            # the student's horizon first, else the longest (as when found in the teacher dir)
            match.sort(key=lambda d: (d["horizon"] != g.runs[0].horizon, -d["horizon"]))
        else:
            found = _discover_teacher_eval(g.teacher, g.env_id, g.runs[0].horizon,  # type: ignore[arg-type]
                                           view)
            if found is not None and fps and found["fingerprint"] not in (None, *fps):
                logger.warning("%s: evaluates another version of %s (fingerprint differs); "
                               "not used", found["path"], g.teacher)
                found = None
            match = [found] if found is not None else []
        g.teacher_eval = match[0] if match else None
    for d in given:
        used = d.pop("used", False)
        has_rpd = any(g.method == "rpd" and g.env_id == d["env_id"] for g in groups)
        if not used and has_rpd:
            raise InputError(f"--teacher-eval {d['path']}: its teacher ({d['teacher']}, "
                             f"fingerprint {d['fingerprint']}, {_view_words(_view(d))}) is "
                             f"none of the {d['env_id']} runs' teachers in the view they saw; "
                             "pass the eval JSON of the teacher and view they used")
    for d in [*given, *(g.teacher_eval for g in groups if g.teacher_eval is not None)]:
        if all(x["path"] != d["path"] for x in lines[d["env_id"]]):
            lines[d["env_id"]].append(d)
    return lines


# ---------------------------------------------------------------- output


def _fmt_steps(n: int | None) -> str:
    return "not reached" if n is None else f"{n:,}"


def _fmt_spread(s: dict[str, Any], fmt: str = "{:.2f}") -> str:
    if s["mean"] is None:
        return "-"
    if s["n"] == 1:
        return fmt.format(s["mean"])
    return (f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])} "
            f"[{fmt.format(s['min'])}, {fmt.format(s['max'])}]")


def _fmt_iqm(d: dict[str, Any]) -> str:
    if d["iqm"] is None:
        return "-"
    if d["low"] is None:
        return f"{d['iqm']:.2f} (one seed, no interval)"
    return f"{d['iqm']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"


def render_markdown(stats: list[dict[str, Any]], thresholds: Sequence[float],
                    plots: dict[str, str]) -> str:
    """report.md: one table per task, then how to read it."""
    lines = ["# rpd report", ""]
    for env in sorted({s["env_id"] for s in stats}):
        lines += [f"## {env}", ""]
        if env in plots:
            lines += [f"![{env} learning curves]({plots[env]})", ""]
        head = (["group", "teacher success", "held-out success", "held-out IQM [95 % CI]",
                 "final success",
                 "final step"]
                + [f"steps to {t:g}" for t in thresholds]
                + ["live teacher calls / step", "wall-clock", "steps/s", "seeds"])
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for s in (s for s in stats if s["env_id"] == env):
            te = s["teacher_eval"]
            teacher = ("-" if te is None else
                       f"{te['success']:.2f} (h{te['horizon']}, {te['episodes']} ep)")
            reached = []
            for t in thresholds:
                d = s["steps_to"][f"{t:g}"]
                k = sum(x is not None for x in d["per_seed"])
                reached.append(f"{_fmt_steps(d['mean_curve'])} ({k}/{s['n_seeds']} seeds)")
            wall = s["wall_time_s"]["mean"]
            seeds = f"{s['n_seeds']}"
            if s["finished"] < s["n_seeds"]:
                seeds += f" ({s['n_seeds'] - s['finished']} unfinished)"
            held = s["heldout_success"]
            held_cell = "-" if not held["n"] else (
                _fmt_spread(held) + f" ({held['n']}/{s['n_seeds']} seeds, "
                f"{'/'.join(map(str, s['heldout_episodes']))} ep)")
            row = [s["label"], teacher, held_cell, _fmt_iqm(s["heldout_iqm"]),
                   _fmt_spread(s["final_success"]),
                   _fmt_spread(s["final_step"], "{:,.0f}"), *reached,
                   _fmt_spread(s["live_teacher_calls_per_step"], "{:.3f}"),
                   "-" if wall is None else f"{wall / 60:.1f} min",
                   _fmt_spread(s["steps_per_s"], "{:.0f}"), seeds]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        for s in (s for s in stats if s["env_id"] == env):
            ev = s["student_eval"]
            lines.append(f"- {s['label']}: seeds {', '.join(str(x) for x in s['seeds'])}; "
                         f"student eval {'/'.join(map(str, ev['episodes']))} episodes at "
                         f"horizon {'/'.join(map(str, ev['horizon']))}; runs "
                         + ", ".join(f"`{r}`" for r in s["runs"]))
        lines.append("")
        lines += _best_checkpoint_table([s for s in stats if s["env_id"] == env])
    lines += [
        "Held-out success: `rpd eval --student RUN --held-out` of each finished seed's final "
        "policy, on the seed plan's held-out episodes (no demo, cache, training episode or "
        "in-training evaluation used them), mean ± std [min, max] over the seeds that have one. "
        "Held-out IQM: the interquartile mean over those seeds (the mean of the middle half; "
        "with fewer than four seeds, the mean) with a 95 % bootstrap confidence interval over "
        "seeds (rliable, seeded; a few seeds give a wide interval). "
        "Final success: each seed's last in-training evaluation, mean ± std [min, max] over "
        "seeds. "
        "Steps to X: first evaluation at which the mean over seeds reaches X (in brackets, how "
        "many seeds reached X on their own). Live teacher calls per env step, wall-clock "
        "(evaluations included) and steps/s (training only, evaluations excluded) are means "
        "over seeds. Teacher success: `rpd eval --teacher` at the horizon shown (success at any "
        "step).", ""]
    return "\n".join(lines)


def _best_checkpoint_table(stats: list[dict[str, Any]]) -> list[str]:
    """The best-checkpoint table of one task, when any of its runs has that policy scored."""
    if not any(s["best_checkpoint"]["n"] for s in stats):
        return []
    lines = ["Best checkpoint: each seed's policy of its best in-training evaluation "
             "(checkpoints/best.zip, chosen on the evaluation seeds), scored by `rpd eval "
             "--student RUN --checkpoint best --held-out` on the held-out ones.", "",
             "| group | best evaluation | at step | held-out success | "
             "held-out IQM [95 % CI] | seeds |", "| --- | --- | --- | --- | --- | --- |"]
    for s in stats:
        b = s["best_checkpoint"]
        if not b["n"]:
            continue
        lines.append(f"| {s['label']} | {_fmt_spread(b['eval_success'])} | "
                     f"{_fmt_spread(b['step'], '{:,.0f}')} | {_fmt_spread(b['heldout_success'])}"
                     f" ({'/'.join(map(str, b['heldout_episodes']))} ep) | "
                     f"{_fmt_iqm(b['heldout_iqm'])} | {b['n']}/{s['n_seeds']} |")
    return [*lines, ""]


def plot_env(stats: list[dict[str, Any]], teacher_lines: list[dict[str, Any]], env_id: str,
             path: Path, band: str) -> None:
    """One PNG: mean success vs env steps per group, with a band, and teachers as dashes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, s in enumerate(stats):
            c = s["curve"]
            x, m = np.asarray(c["steps"]), np.asarray(c["mean"])
            if band == "std":
                lo, hi = m - np.asarray(c["std"]), m + np.asarray(c["std"])
            else:
                lo, hi = np.asarray(c["min"]), np.asarray(c["max"])
            color = colors[i % len(colors)]
            seeds = f"{s['n_seeds']} seed" + ("s" if s["n_seeds"] > 1 else "")
            ax.plot(x, m, color=color, marker="o" if len(x) < 30 else None, ms=3,
                    label=f"{s['label']} ({seeds})")
            if s["n_seeds"] > 1:
                ax.fill_between(x, np.clip(lo, 0, 1), np.clip(hi, 0, 1), color=color, alpha=0.2,
                                linewidth=0)
        for j, d in enumerate(teacher_lines):
            name = Path(str(d["teacher"])).name if d.get("teacher") else ""
            label = "teacher" if name in ("", "teacher") else f"teacher {name}"
            if _view(d) != (0.0, None):
                label += f", {_view_words(_view(d))}"
            ax.axhline(d["success"], color="k", linestyle="--", linewidth=1.2,
                       alpha=0.8 - 0.2 * (j % 3),
                       label=f"{label}: {d['success']:.2f} (h{d['horizon']}, {d['episodes']} ep)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval success")
        ax.set_ylim(-0.02, 1.02)
        most = max((s["n_seeds"] for s in stats), default=1)
        if most > 1:
            spread_name = "min to max" if band == "minmax" else "±1 std"
            ax.set_title(f"{env_id}: mean over seeds (up to {most}), band = {spread_name}")
        else:
            ax.set_title(f"{env_id}: one seed per group")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)


def make_report(cfg: ReportConfig) -> dict[str, Any]:
    """Read the runs, write OUT/report.md, OUT/report.json and one PNG per task.

    Everything is read and checked before anything is written, so bad input writes nothing.

    Returns:
        The contents of report.json.
    """
    from rpd.data.schema import write_json_atomic

    seen: set[str] = set()
    runs = []
    for p in cfg.runs:
        key = os.path.realpath(p)
        if key in seen:
            continue
        seen.add(key)
        runs.append(read_run(p))
    groups = group_runs(runs)
    lines = _attach_teacher_evals(groups, cfg)
    stats = [group_stats(g, cfg.thresholds) for g in groups]
    cfg.out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for env in sorted(lines):
        name = f"{env}.png"
        plot_env([s for s in stats if s["env_id"] == env], lines[env], env, cfg.out / name,
                 cfg.band)
        plots[env] = name
    report = dict(schema_version=REPORT_SCHEMA_VERSION,
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  thresholds=list(cfg.thresholds), band=cfg.band, plots=plots,
                  teacher_lines={e: v for e, v in lines.items() if v}, groups=stats)
    write_json_atomic(cfg.out / REPORT_JSON, _finite(report))
    tmp = cfg.out / f".{REPORT_MD}.tmp"
    tmp.write_text(render_markdown(stats, cfg.thresholds, plots))
    tmp.replace(cfg.out / REPORT_MD)
    logger.info("report of %d runs in %d groups written to %s", len(runs), len(groups), cfg.out)
    return report


def _finite(x: Any) -> Any:
    """NaN/inf -> None, so report.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x
