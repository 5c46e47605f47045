"""Measured whether a shared teacher-action store pays: a sweep of RPD runs sharing one store.

Run 1 trains with its own store (RUN/cache); runs 2..N pass `--cache` that store, read it and
write their live labels back. Each run audits a sample of the labels answered without the
live teacher (`--answer-audit`), so the table shows their error beside how many there were.
With `--references`, each seed is also trained with every label asked live
(`--no-label-model`, its own store): the held-out success a shared store must keep.

    python benchmarks/experiments/bench_cache_sweep.py --teacher T [--env PushCube-v1]
        [--reward sparse] [--steps 80000] [--seeds 0 1 2 3 4] [--references [--reference-seeds 1 2]]
        [--train-args "..."] --out DIR

Resumable: a finished run (student.json and heldout.json present) is kept, an unfinished one
resumed. Prints a markdown table and writes OUT/sweep.json. Give it the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from rpd.data.seeds import HELD_OUT


def rpd(*args: str, log: Path) -> None:
    with open(log, "a") as f:
        subprocess.run([sys.executable, "-m", "rpd.cli", *args], check=True, stdout=f,
                       stderr=subprocess.STDOUT)


def train_and_eval(run: Path, base: list[str], extra: list[str], a: argparse.Namespace) -> dict:
    """Train (or resume) one run, evaluate it on held-out seeds, return its row."""
    log = run.with_suffix(".log")
    if not (run / "student.json").is_file():
        resume = ["--resume"] if (run / "config.json").is_file() else []
        rpd("train", *base, *extra, "--out", str(run), *resume, log=log)
    heldout = run / "heldout.json"
    if not heldout.is_file():
        rpd("eval", "--student", str(run), "--env", a.env, "--episodes", str(a.heldout_episodes),
            "--seed", str(a.heldout_seed), "--json", str(heldout), log=log)
    m = json.loads((run / "student.json").read_text())["metrics"]
    h = json.loads(heldout.read_text())
    answers = m.get("answers", {})
    return dict(run=run.name, live=int(m["live_teacher_calls"]),
                audit=int(m.get("audit_calls", 0)),
                exact=answers.get("exact", 0), neighbour=answers.get("neighbour", 0),
                model=answers.get("model", 0), answer_error=m.get("answer_error", {}),
                heldout=float(h["success"]), wall_s=float(m["wall_time_s"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--reward", default="sparse")
    p.add_argument("--steps", type=int, default=80_000)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--audit", type=int, default=16, help="--answer-audit of every run")
    p.add_argument("--references", action="store_true",
                   help="Also train seeds with all labels asked live.")
    p.add_argument("--reference-seeds", type=int, nargs="+", default=None,
                   help="The seeds of those runs [default: every seed].")
    p.add_argument("--train-args", default="", help="More `rpd train` options, for every run.")
    p.add_argument("--heldout-episodes", type=int, default=50)
    p.add_argument("--heldout-seed", type=int, default=HELD_OUT.start,
                   help="First held-out seed (the seed plan's held-out range).")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    a.out.mkdir(parents=True, exist_ok=True)
    decay = str(int(0.6 * a.steps))
    base = ["--env", a.env, "--reward", a.reward, "--teacher", str(a.teacher),
            "--steps", str(a.steps), "--envs", str(a.envs), "--lambda-schedule", "cosine",
            "--lambda-decay-steps", decay, "--answer-audit", str(a.audit),
            *shlex.split(a.train_args)]
    sweep, refs = [], []
    first = a.out / f"sweep-s{a.seeds[0]}"
    for i, seed in enumerate(a.seeds):
        store = [] if i == 0 else ["--cache", str(first / "cache"), "--offline-steps", "0"]
        sweep.append(train_and_eval(a.out / f"sweep-s{seed}", [*base, "--seed", str(seed)],
                                    store, a))
        print(json.dumps(sweep[-1]), flush=True)
    if a.references:
        for seed in a.reference_seeds or a.seeds:
            refs.append(train_and_eval(a.out / f"live-s{seed}", [*base, "--seed", str(seed)],
                                       ["--no-label-model"], a))
            print(json.dumps(refs[-1]), flush=True)
    (a.out / "sweep.json").write_text(json.dumps(dict(sweep=sweep, references=refs), indent=2))

    ref = {r["run"].split("-s")[-1]: r for r in refs}
    print(f"\n{a.env} {a.reward}, {a.steps} steps, {a.envs} envs, teacher {a.teacher}\n")
    print("| run | live calls | exact | neighbour | model (error) | audit calls | held out "
          "| all-live run held out |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sweep:
        err = r["answer_error"].get("model")
        seed = r["run"].split("-s")[-1]
        other = f"{ref[seed]['heldout']:.0%} ({ref[seed]['live']} calls)" if seed in ref else ""
        print(f"| {r['run']} | {r['live']} | {r['exact']} | {r['neighbour']} | {r['model']}"
              f"{'' if err is None else f' ({err:.4f})'} | {r['audit']} | {r['heldout']:.0%} "
              f"| {other} |")
    later = sum(r["live"] for r in sweep[1:])
    print(f"\nruns 2-{len(sweep)} together: {later} live calls = "
          f"{later / max(sweep[0]['live'], 1):.1%} of run 1's {sweep[0]['live']}")


if __name__ == "__main__":
    main()
