"""The whole rpd chain for one task, with rpd's own commands: demos -> teacher -> teacher eval ->
(cache) -> RPD and plain-PPO students over seeds -> report.

Every stage is an `rpd` subprocess (the same interpreter: `python -m rpd.cli ...`), so the chain
exercises exactly what a user runs. The chain is resumable: run the same command again and
finished stages are skipped (demos whose converted .h5 exists, a teacher with teacher.json, a
teacher eval JSON that exists, a student run with student.json of at least --steps steps);
an unfinished teacher or student run is continued with --resume; the report is always redrawn,
from the runs of --seeds and every finished run of other seeds in OUT/runs (same task and
reward), so seeds can be added by later invocations.
RPD and PPO runs of a seed are run back to back (seed 0 RPD, seed 0 PPO, seed 1 RPD, ...), so
a change in machine load hits both methods alike. With --cache, all RPD seeds share one store
and each writes its live labels back into it: later seeds reuse earlier seeds' labels (the
design's point), so their live-call counts are not independent repeats.

Layout of --out:

    OUT/demos/ENV/                  `rpd demos generate` (ManiSkill .h5 + .json)
    OUT/teacher/                    `rpd finetune-teacher` (unless --teacher DIR)
    OUT/eval/teacher-ENV-hH.json    `rpd eval --teacher`
    OUT/store/                      `rpd cache` (only with --cache)
    OUT/runs/ENV-REWARD-{rpd,ppo}-sSEED/   `rpd train`
    OUT/report/                     `rpd report` (report.md, report.json, ENV.png)
    OUT/chain.log                   every command run, its exit code and wall time

Commands (prefix `nice -n 19` on a shared machine; child processes inherit it):

    # the measurement the README's results come from (long: hours on 2 CPU cores)
    python benchmarks/rpd_chain.py --env PushCube-v1 --reward dense --steps 200000 \\
        --seeds 0 1 2 --envs 8 --out results/push

    # the same with a teacher you already have, its labels precomputed into a store first
    python benchmarks/rpd_chain.py --env PushCube-v1 --teacher teachers/push --cache \\
        --steps 200000 --seeds 0 1 2 --out results/push-cached

    # print the commands without running anything (shows which stages would be skipped)
    python benchmarks/rpd_chain.py --env PushCube-v1 --steps 200000 --seeds 0 1 2 \\
        --out results/push --dry-run

    # a tiny end-to-end check (a few minutes): cnn-tiny teacher, few demos, 512 steps
    python benchmarks/rpd_chain.py --env PushCube-v1 --steps 512 --seeds 0 --envs 2 \\
        --demos-num 4 --teacher-kind cnn-tiny --teacher-steps 20 --image-size 64 \\
        --teacher-episodes 2 --eval-every 256 --eval-episodes 2 --live-budget 16 \\
        --out /tmp/chain-tiny

Options not listed here go to both `rpd train` runs with --train-args, e.g.
`--train-args "--n-epochs 4 --lambda 0.5"`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

RPD = [sys.executable, "-m", "rpd.cli"]
CONVERTED_DEMOS = "trajectory.none.pd_ee_delta_pose.physx_cpu.h5"
"""What `rpd demos generate` writes for pd_ee_delta_pose (rpd.data.demos.converted_name)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", required=True, help="Task id, e.g. PushCube-v1.")
    p.add_argument("--reward", choices=["dense", "sparse"], default="dense")
    p.add_argument("--steps", type=int, required=True, help="Env steps per student run.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--envs", type=int, default=8, help="Parallel envs per student run.")
    p.add_argument("--live-budget", type=int, default=None,
                   help="Max live teacher calls per rollout (RPD runs).")
    p.add_argument("--out", type=Path, required=True, help="Chain directory.")
    p.add_argument("--teacher", type=Path, default=None,
                   help="Use this teacher checkpoint (skips demos and fine-tuning).")
    p.add_argument("--dry-run", action="store_true", help="Print the commands, run nothing.")
    # demos and teacher
    p.add_argument("--demos-num", type=int, default=100, help="Motion-planned demos to make.")
    p.add_argument("--teacher-kind", default="octo-small")
    p.add_argument("--teacher-size", default="small")
    p.add_argument("--teacher-steps", type=int, default=3000)
    p.add_argument("--image-size", type=int, default=128, help="Teacher camera resolution.")
    p.add_argument("--workers", type=int, default=2,
                   help="Processes for demos, rendering, teacher eval and cache.")
    p.add_argument("--teacher-episodes", type=int, default=50, help="Teacher eval episodes.")
    p.add_argument("--teacher-horizon", type=int, default=100, help="Teacher eval horizon.")
    # cache
    p.add_argument("--cache", action="store_true",
                   help="Precompute teacher labels (`rpd cache`) and train RPD from the store.")
    p.add_argument("--cache-rollouts", type=int, default=20,
                   help="Teacher rollouts to label (and as many noisy ones).")
    # students
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--train-args", default="", help="Extra `rpd train` options (both runs).")
    p.add_argument("--methods", nargs="+", choices=("rpd", "ppo"), default=["rpd", "ppo"],
                   help="Student runs per seed (two chains with one method each can share "
                        "an --out and run side by side).")
    args = p.parse_args(argv)
    if args.steps <= 0 or args.envs <= 0:
        p.error("--steps and --envs must be positive")
    return args


class Chain:
    """Runs (or prints) the stages; appends every command to OUT/chain.log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.out: Path = args.out.resolve()
        self.log = self.out / "chain.log"

    # paths
    @property
    def demos(self) -> Path:
        return self.out / "demos" / self.a.env / CONVERTED_DEMOS

    @property
    def teacher(self) -> Path:
        return self.a.teacher.resolve() if self.a.teacher else self.out / "teacher"

    @property
    def teacher_eval(self) -> Path:
        return self.out / "eval" / f"teacher-{self.a.env}-h{self.a.teacher_horizon}.json"

    @property
    def store(self) -> Path:
        return self.out / "store"

    def run_dir(self, method: str, seed: int) -> Path:
        return self.out / "runs" / f"{self.a.env}-{self.a.reward}-{method}-s{seed}"

    # execution
    def run(self, stage: str, cmd: list[str]) -> None:
        line = shlex.join(["rpd", *cmd])
        print(f"[{stage}] {line}", flush=True)
        if self.a.dry_run:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        proc = subprocess.Popen([*RPD, *cmd])
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the rpd child too: let it keep its finished work and exit
            rc = proc.wait()
            self._log(stage, rc, time.time() - t0, line)
            sys.exit(f"rpd_chain: interrupted in stage {stage}; run the same command again to "
                     "resume")
        wall = time.time() - t0
        self._log(stage, rc, wall, line)
        if rc != 0:
            sys.exit(f"rpd_chain: stage {stage} failed (exit code {rc}): {line}")
        print(f"[{stage}] done in {wall:.0f} s", flush=True)

    def _log(self, stage: str, rc: int, wall: float, line: str) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(dict(time=time.strftime("%Y-%m-%dT%H:%M:%S"), stage=stage,
                                    rc=rc, wall_s=round(wall, 1), command=line)) + "\n")

    def skip(self, stage: str, why: str) -> None:
        print(f"[{stage}] skipped: {why}", flush=True)

    # stages
    def make_demos(self) -> None:
        if self.a.teacher is not None:
            return self.skip("demos", f"--teacher {self.a.teacher} given")
        if self.demos.is_file():
            return self.skip("demos", f"{self.demos} exists")
        self.run("demos", ["demos", "generate", "--env", self.a.env, "--num",
                           str(self.a.demos_num), "--out", str(self.demos.parent),
                           "--workers", str(self.a.workers)])

    def make_teacher(self) -> None:
        if self.a.teacher is not None:
            return self.skip("teacher", f"--teacher {self.a.teacher} given")
        t = self.teacher
        if (t / "teacher.json").is_file() and not (t / "train_state.pt").exists():
            return self.skip("teacher", f"{t} holds a finished teacher")
        cmd = ["finetune-teacher", "--demos", str(self.demos), "--out", str(t),
               "--kind", self.a.teacher_kind, "--size", self.a.teacher_size,
               "--steps", str(self.a.teacher_steps), "--image-size", str(self.a.image_size),
               "--workers", str(self.a.workers), "--threads", "1"]
        if (t / "train_state.pt").exists():
            cmd.append("--resume")
        self.run("teacher", cmd)

    def eval_teacher(self) -> None:
        if self.teacher_eval.is_file():
            return self.skip("teacher-eval", f"{self.teacher_eval} exists")
        self.run("teacher-eval", ["eval", "--teacher", str(self.teacher), "--env", self.a.env,
                                  "--episodes", str(self.a.teacher_episodes),
                                  "--horizon", str(self.a.teacher_horizon),
                                  "--workers", str(self.a.workers),
                                  "--json", str(self.teacher_eval)])

    def make_cache(self) -> None:
        if not self.a.cache:
            return
        # `rpd cache` resumes by itself: finished episodes are skipped on a re-run
        cmd = ["cache", "--teacher", str(self.teacher), "--env", self.a.env,
               "--out", str(self.store), "--rollouts", str(self.a.cache_rollouts),
               "--noise", "0.1", "--horizon", str(self.a.teacher_horizon),
               "--workers", str(self.a.workers), "--seed", "0"]
        if self.demos.is_file():
            cmd += ["--demos", str(self.demos)]
        self.run("cache", cmd)

    def train(self, method: str, seed: int) -> Path:
        out = self.run_dir(method, seed)
        stage = f"train-{method}-s{seed}"
        resume = False
        if (out / "student.json").is_file():
            done = json.loads((out / "student.json").read_text())["metrics"]["steps"]
            if done >= self.a.steps:
                self.skip(stage, f"{out} finished ({done} steps)")
                return out
            resume = True  # --steps grew: continue the finished run
        elif (out / "config.json").is_file():
            resume = True
        cmd = ["train", "--env", self.a.env, "--reward", self.a.reward,
               "--steps", str(self.a.steps), "--envs", str(self.a.envs), "--seed", str(seed),
               "--eval-every", str(self.a.eval_every),
               "--eval-episodes", str(self.a.eval_episodes), "--out", str(out)]
        if method == "ppo":
            cmd.append("--no-teacher")
        else:
            cmd += ["--teacher", str(self.teacher)]
            if self.a.cache:
                cmd += ["--cache", str(self.store)]
            if self.a.live_budget is not None:
                cmd += ["--live-budget", str(self.a.live_budget)]
        cmd += shlex.split(self.a.train_args)
        if resume:
            cmd.append("--resume")
        self.run(stage, cmd)
        return out

    def report(self, runs: list[Path]) -> None:
        # finished runs of other seeds from earlier invocations (same task and reward) join in
        pattern = f"{self.a.env}-{self.a.reward}-*-s*"
        runs = runs + sorted(p for p in (self.out / "runs").glob(pattern)
                             if p not in runs and (p / "student.json").is_file())
        self.run("report", ["report", *map(str, runs), "--out", str(self.out / "report"),
                            "--teacher-eval", str(self.teacher_eval)])


def main(argv: list[str] | None = None) -> None:
    chain = Chain(parse_args(argv))
    chain.make_demos()
    chain.make_teacher()
    chain.eval_teacher()
    chain.make_cache()
    runs = [chain.train(method, seed) for seed in chain.a.seeds for method in chain.a.methods]
    chain.report(runs)
    if not chain.a.dry_run:
        print(f"report: {chain.out / 'report' / 'report.md'}")


if __name__ == "__main__":
    main()
