"""`rpd run`: the whole job in one command, stage by stage with rpd's own commands.

demos -> teacher -> teacher eval -> (cache) -> RPD and plain-PPO students per seed ->
held-out evaluation of each student -> report.
Every stage is an `rpd` subprocess (the same interpreter), so the chain runs exactly what a
user runs stage by stage, and it is resumable: finished stages are skipped (demos whose
converted .h5 exists, a teacher with teacher.json and no training state, a teacher eval JSON
that exists, a student run whose student.json has at least `steps` steps, a held-out JSON of
the student's final step); an unfinished teacher or student run is continued with --resume;
the report is always redrawn, from the runs of `seeds` and every finished run of other seeds in
OUT/runs (same task and reward). RPD and PPO runs of a seed run back to back, so a change in
machine load hits both alike.

Each finished stage's command is recorded in OUT/stages.json. A stage whose output exists but
was made by a different command (another teacher, teacher steps, cache or student options) is
refused with one line instead of being silently reused; a student run may only grow its
`--steps`.

Layout of `out`:

    OUT/demos/ENV/                  `rpd demos generate` (ManiSkill .h5 + .json)
    OUT/teacher/                    `rpd finetune-teacher` (unless `teacher` is given)
    OUT/eval/teacher-ENV-hH.json    `rpd eval --teacher`
    OUT/store/                      `rpd cache` (only with `cache`)
    OUT/runs/ENV-REWARD-{rpd,ppo}-sSEED/   `rpd train`
    OUT/runs/.../eval/ENV-hH-heldout.json  `rpd eval --student RUN --held-out`
    OUT/report/                     `rpd report` (report.md, report.json, ENV.png)
    OUT/run.log                     every command run, its exit code and wall time (JSON lines)
    OUT/stages.json                 the command that made each finished stage
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rpd.config import option
from rpd.data.rundir import (
    CONFIG_JSON,
    EVAL_DIR,
    STUDENT_JSON,
    TRAIN_STATE,
    heldout_path,
    view_suffix,
)
from rpd.data.tasks import get_task
from rpd.data.trajectories import is_complete_pair
from rpd.errors import InputError
from rpd.pipeline.train_config import OBS_MODES

CONVERTED_DEMOS = "trajectory.none.pd_ee_delta_pose.physx_cpu.h5"
"""What `rpd demos generate` writes for pd_ee_delta_pose (rpd.data.demos.converted_name)."""
DEFAULT_TASK_HORIZON = 50
"""A student's episode length when its run sets none (every supported task's)."""
RUN_LOG = "run.log"
STAGE_RECORD = "stages.json"
TEACHER_RECIPES: dict[str, list[str]] = {"cnn-tiny": ["--batch-size", "64", "--lr", "1e-3"]}
"""`rpd finetune-teacher` options measured per backend (README, Teachers)."""
METHODS = ("rpd", "ppo")


CHAIN_SETS = ("env_id", "out", "steps", "seed", "resume", "teacher", "no_teacher", "cache",
              "reward", "envs", "obs", "eval_every", "eval_episodes")
"""`rpd train` options each student run gets from the chain's own options (the run folders
are named by some of them), not from `train`."""


@dataclass
class RunConfig:
    """`rpd run`. The defaults are the quickstart: they show the method on sparse PushCube and
    finish in about 20 minutes on 2 CPU cores (see the README for the measured time)."""

    command: ClassVar[str] = "run"

    out: Path = option(help="Chain directory (created; re-running with it resumes).")
    env_id: str = option("PushCube-v1", cli="--env", help="Task id.")
    reward: str = option("sparse", choices=("sparse", "dense"),
                         help="sparse (the paper's setting where PPO struggles) or dense.")
    steps: int = option(80_000, help="Env steps per student run.")
    seeds: tuple[int, ...] = option((0,), help="Student seeds; each gets an RPD and a PPO run.")
    envs: int = option(8, help="Parallel envs per student run.")
    methods: tuple[str, ...] = option(METHODS, choices=METHODS,
                                      help="Student runs per seed: rpd, ppo or both.")
    teacher: Path | None = option(
        None, help="Use this teacher checkpoint (skips demos and fine-tuning) [default: make "
        "one].")
    teacher_kind: str = option("cnn-tiny",
                               help="Backend of the teacher to fine-tune (cnn-tiny: the cheap "
                               "real one; octo-small: a small VLA, hours on a CPU).")
    teacher_size: str = option("small", help="Its size preset.")
    teacher_steps: int = option(3000, help="Teacher fine-tuning steps.")
    teacher_args: str | None = option(
        None, help="Extra `rpd finetune-teacher` options [default for cnn-tiny: --batch-size 64 "
        "--lr 1e-3, the measured recipe].")
    image_size: int = option(64, help="Teacher camera resolution (square).")
    demos_num: int = option(100, help="Motion-planned demos to generate.")
    demo_speedup: int = option(
        4, help="Fine-tune the teacher on fast demos, every K planner actions merged into one "
        "(`rpd demos speedup`); 1 = the planner's pace.")
    workers: int = option(2, help="Processes for demos, rendering, teacher eval and cache.")
    teacher_episodes: int = option(50, help="Teacher evaluation episodes.")
    teacher_horizon: int = option(50, help="Teacher evaluation horizon (the students' is the "
                                  "task's: 50).")
    cache: bool = option(False, help="Precompute teacher labels (`rpd cache`) and train RPD "
                         "from the store.")
    cache_rollouts: int = option(20, help="Teacher rollouts to label for the store (and as "
                                 "many noisy ones).")
    live_budget: int | None = option(
        None, help="Max live teacher calls per rollout of an RPD run [default: unlimited: every "
        "state is labelled while λ > 0, most by the label model]; 0 = none.")
    lambda_decay_steps: int | None = option(
        None, help="λ falls from 1 to 0 (cosine) by this step [default: 60 % of --steps].")
    eval_every: int = option(10_000, help="Student evaluation interval (env steps).")
    eval_episodes: int = option(20, help="Student evaluation episodes.")
    heldout_episodes: int = option(50, help="Held-out episodes per finished student (the "
                                   "published success).")
    obs: str = option("state", choices=OBS_MODES,
                      help="Student observation (`rpd train --obs`).")
    wandb: bool = option(False, help="Log every student run to Weights & Biases (`rpd train "
                         "--wandb`; WANDB_MODE=offline keeps them on disk).")
    train_args: str = option("", help="Extra `rpd train` options for every student run, as one "
                             "string (a config file's `train` section is the structured way).")
    train: dict[str, Any] | None = option(
        None, on_cli=False,
        help="`rpd train` options for the student runs ({option: value}, checked against "
        "`rpd train`'s own); options that act only through the teacher reach the RPD runs "
        "only.")

    def __post_init__(self) -> None:
        self.out = Path(self.out).resolve()
        self.teacher = Path(self.teacher).resolve() if self.teacher is not None else None
        self.seeds, self.methods = tuple(self.seeds), tuple(self.methods)
        get_task(self.env_id)
        if self.reward not in ("dense", "sparse"):
            raise InputError(f"--reward {self.reward!r}: use 'dense' or 'sparse'")
        for name in ("steps", "envs", "teacher_steps", "image_size", "demos_num", "workers",
                     "teacher_episodes", "teacher_horizon", "eval_every", "eval_episodes",
                     "heldout_episodes"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be a "
                                 "positive number")
        if not 1 <= self.demo_speedup <= 8:
            raise InputError(f"--demo-speedup {self.demo_speedup}: use 2..8 (planner actions "
                             "merged into one), or 1 for the planner's pace")
        if not self.seeds:
            raise InputError("--seeds: give at least one seed")
        if any(s < 0 for s in self.seeds):
            raise InputError(f"--seeds {list(self.seeds)}: seeds must be ≥ 0")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise InputError(f"--methods {','.join(self.methods)}: use rpd, ppo or both")
        if self.teacher is not None and not (self.teacher / "teacher.json").is_file():
            raise InputError(f"--teacher {self.teacher}: not a teacher checkpoint (no "
                             "teacher.json); pass a directory written by `rpd finetune-teacher`, "
                             "`rpd scripted-teacher` or `rpd connect-teacher`, or drop --teacher")
        if self.lambda_decay_steps is not None and self.lambda_decay_steps <= 0:
            raise InputError(f"--lambda-decay-steps {self.lambda_decay_steps}: must be > 0")
        if self.live_budget is not None and self.live_budget < 0:
            raise InputError(f"--live-budget {self.live_budget}: must be ≥ 0 (0 = no live "
                             "calls; leave it out for unlimited)")
        for option_name, value in (("--train-args", self.train_args),
                                   ("--teacher-args", self.teacher_args or "")):
            try:
                shlex.split(value)
            except ValueError as e:
                raise InputError(f"{option_name} {value!r}: {e}") from None
        from rpd.config import values_from_mapping
        from rpd.pipeline.train_config import TrainConfig

        self.train = values_from_mapping(TrainConfig, self.train or {}, "train section")
        chain = sorted(set(self.train) & set(CHAIN_SETS))
        if chain:
            raise InputError(f"train section: {', '.join(chain)} are set by `rpd run` itself "
                             "(use its own options: --env, --steps, --seeds, --teacher, "
                             "--cache, --reward, --envs, --obs, --eval-every, --eval-episodes)")
        # every student run's options, checked now rather than after demos and a teacher
        TrainConfig(env_id=self.env_id, out=self.out / "runs", teacher=self.teacher_dir,
                    steps=self.steps, reward=self.reward, envs=self.envs, obs=self.obs,
                    eval_every=self.eval_every, eval_episodes=self.eval_episodes,
                    **{"lambda_decay_steps": self.lambda_decay_steps or max(1, self.steps),
                       **self.train})

    def train_options(self, method: str) -> list[str]:
        """The `train` section as `rpd train` options of one method's runs (what acts only
        through the teacher is left out of plain-PPO runs)."""
        from rpd.config import as_command_line
        from rpd.pipeline.train_config import TEACHER_ONLY_FIELDS, TrainConfig

        section = {k: v for k, v in (self.train or {}).items()
                   if method == "rpd" or k not in TEACHER_ONLY_FIELDS}
        return as_command_line(TrainConfig, section)

    @property
    def resolved_teacher_args(self) -> list[str]:
        if self.teacher_args is not None:
            return shlex.split(self.teacher_args)
        return TEACHER_RECIPES.get(self.teacher_kind, [])

    def decay_steps(self, run_dir: Path) -> int:
        """λ's decay step for a student run: the option, else the one the run was started with
        (so a finished run continued to more `steps` keeps its schedule), else 60 % of
        `steps`."""
        if self.lambda_decay_steps is not None:
            return self.lambda_decay_steps
        saved = _read_json(run_dir / CONFIG_JSON).get("lambda_decay_steps")
        return int(saved) if saved else max(1, int(0.6 * self.steps))

    # ---- paths ----------------------------------------------------------------------------

    @property
    def planner_demos(self) -> Path:
        return self.out / "demos" / self.env_id / CONVERTED_DEMOS

    @property
    def demos(self) -> Path:
        """The demos the teacher is fine-tuned on (fast ones with `demo_speedup`)."""
        if self.demo_speedup == 1:
            return self.planner_demos
        return self.planner_demos.with_name(f"trajectory.x{self.demo_speedup}."
                                            f"{CONVERTED_DEMOS[len('trajectory.'):]}")

    @property
    def teacher_dir(self) -> Path:
        return self.teacher if self.teacher is not None else self.out / "teacher"

    @property
    def teacher_view(self) -> tuple[float, str | None]:
        """The view the RPD runs show the teacher (camera shift, object colour), from the
        train section or --train-args: the view the chain measures the teacher in."""
        train = dict(self.train or {})
        args = shlex.split(self.train_args)
        for i, a in enumerate(args):
            for flag, key in (("--teacher-camera-shift", "teacher_camera_shift"),
                              ("--teacher-object-color", "teacher_object_color")):
                if a == flag and i + 1 < len(args):
                    train[key] = args[i + 1]
                elif a.startswith(flag + "="):
                    train[key] = a.split("=", 1)[1]
        color = train.get("teacher_object_color")
        return float(train.get("teacher_camera_shift") or 0.0), (str(color) if color else None)

    @property
    def teacher_eval(self) -> Path:
        return self.out / EVAL_DIR / (f"teacher-{self.env_id}-h{self.teacher_horizon}"
                                      f"{view_suffix(*self.teacher_view)}.json")

    @property
    def store(self) -> Path:
        return self.out / "store"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    def run_dir(self, method: str, seed: int) -> Path:
        return self.out / "runs" / f"{self.env_id}-{self.reward}-{method}-s{seed}"

    def heldout(self, method: str, seed: int) -> Path:
        """The run's held-out result, at its training horizon (`rpd eval --held-out`'s file)."""
        run = self.run_dir(method, seed)
        horizon = _read_json(run / CONFIG_JSON).get("horizon") or DEFAULT_TASK_HORIZON
        return heldout_path(run, self.env_id, int(horizon))


@dataclass
class Stage:
    """One step of the chain: an `rpd` command, or the reason it is skipped."""

    name: str
    args: list[str]
    skip: str | None = None
    output: Path | None = None

    @property
    def command(self) -> str:
        return shlex.join(["rpd", *self.args])


def _demos(cfg: RunConfig) -> Stage:
    args = ["demos", "generate", "--env", cfg.env_id, "--num", str(cfg.demos_num),
            "--out", str(cfg.planner_demos.parent), "--workers", str(cfg.workers)]
    skip = (f"--teacher {cfg.teacher} given" if cfg.teacher is not None
            else f"{cfg.planner_demos} exists" if is_complete_pair(cfg.planner_demos) else None)
    if skip is None and cfg.planner_demos.exists():
        args.append("--force")  # an .h5 whose .json an interrupted write lost: make both again
    return Stage("demos", args, skip, cfg.planner_demos.parent)


def _fast_demos(cfg: RunConfig) -> list[Stage]:
    if cfg.demo_speedup == 1:
        return []
    args = ["demos", "speedup", str(cfg.planner_demos), "--factor", str(cfg.demo_speedup),
            "--out", str(cfg.demos)]
    skip = (f"--teacher {cfg.teacher} given" if cfg.teacher is not None
            else f"{cfg.demos} exists" if is_complete_pair(cfg.demos) else None)
    if skip is None and cfg.demos.exists():
        args.append("--force")
    return [Stage("fast-demos", args, skip, cfg.demos)]


def _teacher(cfg: RunConfig) -> Stage:
    t = cfg.teacher_dir
    args = ["finetune-teacher", "--demos", str(cfg.demos), "--out", str(t),
            "--kind", cfg.teacher_kind, "--size", cfg.teacher_size,
            "--steps", str(cfg.teacher_steps), "--image-size", str(cfg.image_size),
            "--workers", str(cfg.workers), "--threads", "1", *cfg.resolved_teacher_args]
    if (t / TRAIN_STATE).exists():
        args.append("--resume")
    skip = (f"--teacher {cfg.teacher} given" if cfg.teacher is not None
            else f"{t} holds a finished teacher"
            if (t / "teacher.json").is_file() and not (t / TRAIN_STATE).exists() else None)
    return Stage("teacher", args, skip, t)


def _teacher_eval(cfg: RunConfig) -> Stage:
    args = ["eval", "--teacher", str(cfg.teacher_dir), "--env", cfg.env_id,
            "--episodes", str(cfg.teacher_episodes), "--horizon", str(cfg.teacher_horizon),
            "--workers", str(cfg.workers), "--json", str(cfg.teacher_eval)]
    shift, color = cfg.teacher_view  # in the view the students' teacher sees
    args += ["--camera-shift", f"{shift:g}"] if shift else []
    args += ["--object-color", color] if color else []
    return Stage("teacher-eval", args,
                 f"{cfg.teacher_eval} exists" if cfg.teacher_eval.is_file() else None,
                 cfg.teacher_eval)


def _cache(cfg: RunConfig) -> Stage:
    # `rpd cache` resumes by itself: finished episodes are skipped on a re-run
    args = ["cache", "--teacher", str(cfg.teacher_dir), "--env", cfg.env_id,
            "--out", str(cfg.store), "--rollouts", str(cfg.cache_rollouts), "--noise", "0.1",
            "--horizon", str(cfg.teacher_horizon), "--workers", str(cfg.workers)]
    if cfg.teacher is None:
        args += ["--demos", str(cfg.demos)]
    return Stage("cache", args, None if cfg.cache else "no --cache", cfg.store)


def _train(cfg: RunConfig, method: str, seed: int) -> Stage:
    out = cfg.run_dir(method, seed)
    args = ["train", "--env", cfg.env_id, "--reward", cfg.reward, "--steps", str(cfg.steps),
            "--envs", str(cfg.envs), "--seed", str(seed), "--eval-every", str(cfg.eval_every),
            "--eval-episodes", str(cfg.eval_episodes), "--obs", cfg.obs, "--out", str(out)]
    if method == "ppo":
        args.append("--no-teacher")
    else:
        args += ["--teacher", str(cfg.teacher_dir), "--lambda", "1",
                 "--lambda-schedule", "cosine", "--lambda-decay-steps",
                 str(cfg.decay_steps(out))]
        if cfg.cache:
            args += ["--cache", str(cfg.store)]
        if cfg.live_budget is not None:
            args += ["--live-budget", str(cfg.live_budget)]
        adaptive = (cfg.train or {}).get("lambda_schedule") == "adaptive"
        if adaptive and "teacher_success" not in (cfg.train or {}):
            teacher = _read_json(cfg.teacher_eval)  # the chain's teacher eval, at its horizon
            if "success_rate" in teacher:
                args += ["--teacher-success", str(teacher["success_rate"])]
    if cfg.wandb:
        args.append("--wandb")
    args += cfg.train_options(method) + shlex.split(cfg.train_args)
    skip = None
    if (out / STUDENT_JSON).is_file():
        done = _finished_steps(out)
        if done >= cfg.steps:
            skip = f"{out} finished ({done} steps)"
        else:
            args.append("--resume")  # --steps grew: continue the finished run
    elif (out / CONFIG_JSON).is_file():
        args.append("--resume")
    return Stage(f"train-{method}-s{seed}", args, skip, out)


def _heldout(cfg: RunConfig, method: str, seed: int) -> Stage:
    run, path = cfg.run_dir(method, seed), cfg.heldout(method, seed)
    args = ["eval", "--student", str(run), "--env", cfg.env_id, "--held-out",
            "--episodes", str(cfg.heldout_episodes), "--workers", str(cfg.workers)]
    skip = None
    if path.is_file() and (run / STUDENT_JSON).is_file():
        step = _read_json(path).get("step")
        if step == _finished_steps(run):
            skip = f"{path} scores the final policy ({step} steps)"
    return Stage(f"heldout-{method}-s{seed}", args, skip, path)


def _finished_steps(run: Path) -> int:
    try:
        return int(_read_json(run / STUDENT_JSON)["metrics"]["steps"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{run / 'student.json'}: no metrics.steps; it was not written by "
                         f"`rpd train`: move {run} away to train it again") from None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file the chain wrote, {} if the file is missing."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable ({type(e).__name__}); move it away to remake "
                         "that stage") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object; move it away to remake that stage")
    return data


def _report(cfg: RunConfig) -> Stage:
    runs = [cfg.run_dir(m, s) for s in cfg.seeds for m in cfg.methods]
    # finished runs of other seeds from earlier invocations (same task and reward) join in
    pattern = f"{cfg.env_id}-{cfg.reward}-*-s*"
    runs += sorted(p for p in (cfg.out / "runs").glob(pattern)
                   if p not in runs and (p / STUDENT_JSON).is_file())
    return Stage("report", ["report", *map(str, runs), "--out", str(cfg.report_dir),
                            "--teacher-eval", str(cfg.teacher_eval)])


STAGES: list[Callable[[RunConfig], list[Stage]]] = [
    lambda c: [_demos(c)], _fast_demos, lambda c: [_teacher(c)], lambda c: [_teacher_eval(c)],
    lambda c: [_cache(c)],
    lambda c: [_train(c, m, s) for s in c.seeds for m in c.methods],
    lambda c: [_heldout(c, m, s) for s in c.seeds for m in c.methods],
    lambda c: [_report(c)],
]
"""The chain in order. Each entry is planned only when the stages before it have run, so its
skip decision sees their results."""


def stages(cfg: RunConfig) -> list[Stage]:
    """Every stage as planned now (for --dry-run: later stages see today's files)."""
    return [s for plan in STAGES for s in plan(cfg)]


def _made_by(stage: Stage, cfg: RunConfig) -> list[str]:
    """The part of a stage's command that decides what it makes: without --resume and --force,
    for a student run without --steps (a finished run may be continued to more steps), and
    with paths inside the chain directory relative to it (a moved chain is the same chain)."""
    inside = str(cfg.out) + os.sep
    args = [a.replace(inside, "OUT" + os.sep) for a in stage.args
            if a not in ("--resume", "--force")]
    if stage.name.startswith("train-") and "--steps" in args:
        i = args.index("--steps")
        del args[i:i + 2]
    return args


def check_made_by(stage: Stage, cfg: RunConfig) -> None:
    """Refuse a stage whose output was made by another command (OUT/stages.json).

    Raises:
        InputError: naming the stage, the option values that differ, and what to do.
    """
    if stage.output is None or not stage.output.exists():
        return
    made = _read_json(cfg.out / STAGE_RECORD).get(stage.name)
    now = _made_by(stage, cfg)
    if made is None or made == now:
        return
    changed = sorted(set(_options(made).items()) ^ set(_options(now).items()))
    names = ", ".join(dict.fromkeys(k for k, _ in changed)) or "its arguments"
    raise InputError(f"{stage.output}: made by another command than this invocation's stage "
                     f"{stage.name} (it differs in {names}); pass the options it was made "
                     f"with, or a new --out, or delete {stage.output} to make it again")


def _options(args: list[str]) -> dict[str, str]:
    """{option: value} of a command line (a flag's value is "")."""
    out, key = {}, "command"
    for a in args:
        if a.startswith("--"):
            key = a
            out[key] = ""
        else:
            out[key] = (out.get(key, "") + " " + a).strip()
    return out


def _record(stage: Stage, cfg: RunConfig) -> None:
    if stage.output is None:
        return
    path = cfg.out / STAGE_RECORD
    record = _read_json(path)
    record[stage.name] = _made_by(stage, cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def execute(stage: Stage, cfg: RunConfig, echo: Callable[[str], None]) -> tuple[int, float,
                                                                                 str]:
    """Run one stage as an `rpd` subprocess; its stderr goes through `echo` (progress bars
    included) and the last line it printed is kept.

    Returns:
        (exit code, wall seconds, last non-empty line of its stderr).
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "rpd.cli", *stage.args],
                            stderr=subprocess.PIPE)
    tail = b""
    try:
        assert proc.stderr is not None
        while chunk := os.read(proc.stderr.fileno(), 4096):  # as it comes: progress bars
            echo(chunk.decode(errors="replace"))
            tail = (tail + chunk)[-4096:]
        rc = proc.wait()
    except KeyboardInterrupt:
        rc = proc.wait()  # Ctrl-C reached the child too: it keeps its finished work
        _log(cfg, stage, rc, time.time() - t0)
        raise
    lines = [line.strip() for line in tail.decode(errors="replace").replace("\r", "\n")
             .split("\n")]
    last = next((line for line in reversed(lines) if line), "")
    wall = time.time() - t0
    _log(cfg, stage, rc, wall)
    if rc == 0:
        _record(stage, cfg)
    return rc, wall, last


def _log(cfg: RunConfig, stage: Stage, rc: int, wall: float) -> None:
    with open(cfg.out / RUN_LOG, "a") as f:
        f.write(json.dumps(dict(time=time.strftime("%Y-%m-%dT%H:%M:%S"), stage=stage.name,
                                rc=rc, wall_s=round(wall, 1), command=stage.command)) + "\n")


def summary(cfg: RunConfig) -> dict[str, Any]:
    """What the chain produced: teacher success, each student's held-out success (and its last
    in-training evaluation), live teacher calls per env step, wall times, and where the report
    and plot are."""
    out: dict[str, Any] = dict(env=cfg.env_id, reward=cfg.reward)
    if cfg.teacher_eval.is_file():
        t = _read_json(cfg.teacher_eval)
        out["teacher_success"] = t.get("success_rate", t.get("success"))
    students = {}
    for seed in cfg.seeds:
        for method in cfg.methods:
            meta_path = cfg.run_dir(method, seed) / STUDENT_JSON
            if meta_path.is_file():
                m = _read_json(meta_path).get("metrics", {})
                held = _read_json(cfg.heldout(method, seed))
                students[f"{method}-s{seed}"] = dict(
                    heldout_success=held.get("success"), heldout_episodes=held.get("episodes"),
                    eval_success=m.get("eval_success"), steps=m.get("steps"),
                    live_calls_per_step=m.get("live_teacher_calls_per_step"),
                    wall_time_s=m.get("wall_time_s"))
    out["students"] = students
    out["report"] = str(cfg.report_dir / "report.md")
    out["plot"] = str(cfg.report_dir / f"{cfg.env_id}.png")
    return out
