"""Env steps/s of `rpd train`: plain PPO vs RPD with labels from a cache vs RPD with live labels.

Three runs with identical PPO settings on one task (state observations, dense reward):

1. `live`:  RPD, no --cache: every novel state is labelled live after its rollout (restore the
   state, render the teacher camera, one batched teacher call) and written to RUN/cache.
2. `cache`: RPD with --cache = the store run 1 filled and a radius so large that every lookup
   hits: the cost of the cache path alone (env-state recording, lookup, distill term), i.e.
   "labels from the cache". (The labels are nearest neighbours, not the teacher's answer for
   each state; only the throughput is measured here.)
3. `ppo`:   --no-teacher, the baseline.

The teacher is a fresh `cnn-tiny` (rpd.teachers.simple: a small CNN on the 128x128 render
camera), whose cost per label is dominated by rendering, as for any image teacher on CPU.

    python benchmarks/bench_train.py [--env PushCube-v1] [--steps 4096] [--envs 8] [--out DIR]
        [--runs live cache ppo] [--repeat N]

Prints one row per run: env steps/s of training (rollouts + labelling + updates, evals
excluded), live teacher calls per env step, cache hit rate, mean pre-clip gradient norm.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--runs", nargs="+", default=["live", "cache", "ppo"],
                   help="Runs in order; `cache` needs the store of an earlier `live` in --out.")
    p.add_argument("--repeat", type=int, default=1,
                   help="Repeat the sequence (interleaved, so load changes hit all alike).")
    args = p.parse_args()

    from rpd.data.tasks import get_task
    from rpd.data.views import CameraSpec
    from rpd.pipeline.train import TrainConfig, train
    from rpd.teachers.base import TeacherSpec
    from rpd.teachers.simple import TinyCNNTeacher

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_train_"))
    out.mkdir(parents=True, exist_ok=True)
    spec = TeacherSpec(camera=CameraSpec("render", 128, 128), control_mode="pd_ee_delta_pose",
                       action_dim=7, tasks={args.env: get_task(args.env).instruction})
    teacher_dir = out / "teacher"
    if not (teacher_dir / "teacher.json").is_file():
        TinyCNNTeacher(spec, {}).save(teacher_dir)
    common = dict(env_id=args.env, steps=args.steps, envs=args.envs, eval_every=10**9,
                  eval_episodes=2, seed=0)
    runs = {
        "live": dict(teacher=teacher_dir),
        "cache": dict(teacher=teacher_dir, cache=out / "live" / "cache", cache_radius=1e6,
                      offline_steps=0),
        "ppo": dict(no_teacher=True),
    }
    print(f"{'run':<6} {'steps/s':>8} {'live calls/step':>16} {'hit rate':>9} "
          f"{'grad norm':>10}  (env {args.env}, {args.envs} envs, {args.steps} steps)")
    for name in [n for _ in range(args.repeat) for n in args.runs]:
        run_dir, k = out / name, 0
        while run_dir.exists():
            k += 1
            run_dir = out / f"{name}-{k}"
        meta = train(TrainConfig(out=run_dir, **common, **runs[name]))
        m = meta["metrics"]
        grad = _mean_scalar(run_dir / "tb", "train/grad_norm")
        hit = m["cache_hit_rate"]
        print(f"{name:<6} {m['train_steps_per_s']:>8.1f} {m['live_teacher_calls_per_step']:>16.3f}"
              f" {'-' if hit is None else f'{hit:.3f}':>9} {grad:>10.3f}", flush=True)
        (run_dir / "bench.json").write_text(json.dumps(m, indent=2))


def _mean_scalar(tb_dir: Path, tag: str) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in tb_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars(tag)]
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
