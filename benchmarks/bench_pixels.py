"""Env steps/s of pixel students (`rpd train --obs rgb`) against the render-bound limit.

Measured in one sitting (give it the machine to itself):

1. `limit`: one process steps PushCube-v1 and renders the student camera (64 and 128 px) for
   `--frames` frames; the render-bound limit is cores / (render + physics step time per frame).
   Measured twice: one process alone, and one process per core side by side (what training
   does; two software renders slow each other: 31 ms alone, 40-42 ms side by side at 64 px).
2. `ppo-S`: `rpd train --no-teacher --obs rgb --student-image-size S --envs E`.
3. `rpd-S`: the same with a live `cnn-tiny` teacher that sees the student's camera (own-frame
   labels: nothing rendered for labels) and `--live-budget 25`, the measured recipe.
4. Levers: Mesa's rasteriser threads per env process (`LP_NUM_THREADS`, llvmpipe/lavapipe's
   default is one per core) and the number of env processes.

Every `rpd train` is a subprocess (as a user runs it) with evaluation pushed past the end, so
`train_steps_per_s` in its student.json counts rollouts, labels and updates only.

    python benchmarks/bench_pixels.py [--env PushCube-v1] [--steps 3072] [--sizes 64 128]
        [--envs 8] [--lp-threads default 1] [--env-counts 8 2] [--out DIR]

Prints a markdown table and writes OUT/bench_pixels.json (`benchmarks/record.py`), the record
the Benchmarks page shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import record


def render_limit(env_id: str, size: int, frames: int, barrier: Any = None) -> dict[str, float]:
    """Milliseconds per physics step and per render in one process, and the machine's limit
    (cores / per-frame time). With `barrier`, waits on it after the warm-up (side by side)."""
    import numpy as np

    from rpd.data.vec_envs import EnvConfig, make_env
    from rpd.data.views import CameraSpec, teacher_image

    camera = CameraSpec("render", size, size)
    env = make_env(EnvConfig(env_id, camera=camera))
    try:
        env.reset(seed=0)
        zero = np.zeros(env.action_space.shape, np.float32)
        for _ in range(5):  # warm up
            env.step(zero)
            teacher_image(env, camera)
        if barrier is not None:
            barrier.wait()
        t0 = time.perf_counter()
        for _ in range(frames):
            env.step(zero)
        step_s = (time.perf_counter() - t0) / frames
        t0 = time.perf_counter()
        for _ in range(frames):
            teacher_image(env, camera)
        render_s = (time.perf_counter() - t0) / frames
    finally:
        env.close()
    cores = os.cpu_count() or 1
    return dict(step_ms=step_s * 1e3, render_ms=render_s * 1e3,
                limit_steps_per_s=cores / (step_s + render_s))


def _limit_worker(env_id: str, size: int, frames: int, barrier: Any, results: Any) -> None:
    """One of the side-by-side processes: wait for the others, then measure."""
    from rpd.data.devices import limit_cpu_threads

    limit_cpu_threads()
    results.put(render_limit(env_id, size, frames, barrier))


def side_by_side_limit(env_id: str, size: int, frames: int) -> dict[str, float]:
    """`render_limit` in one process per core at once; the mean per-frame times and the
    machine's limit from them (cores / (step + render))."""
    import multiprocessing as mp

    cores = os.cpu_count() or 1
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(cores), ctx.Queue()
    procs = [ctx.Process(target=_limit_worker, args=(env_id, size, frames, barrier, results))
             for _ in range(cores)]
    for proc in procs:
        proc.start()
    parts = [results.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join()
    step_ms = sum(r["step_ms"] for r in parts) / cores
    render_ms = sum(r["render_ms"] for r in parts) / cores
    return dict(step_ms=step_ms, render_ms=render_ms,
                limit_steps_per_s=cores / ((step_ms + render_ms) / 1e3))


def train_run(out: Path, env_id: str, size: int, steps: int, envs: int, teacher: Path | None,
              lp_threads: str) -> dict[str, float]:
    """One `rpd train` subprocess; its training env steps/s and teacher counters."""
    cmd = [sys.executable, "-m", "rpd.cli", "train", "--env", env_id, "--obs", "rgb",
           "--student-image-size", str(size), "--steps", str(steps), "--envs", str(envs),
           "--eval-every", str(10**9), "--eval-episodes", "1", "--out", str(out)]
    cmd += ["--teacher", str(teacher), "--live-budget", "25"] if teacher else ["--no-teacher"]
    env = dict(os.environ)
    if lp_threads != "default":
        env["LP_NUM_THREADS"] = lp_threads
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    m = json.loads((out / "student.json").read_text())["metrics"]
    return dict(steps_per_s=m["train_steps_per_s"], live_calls=m["live_teacher_calls"],
                teacher_renders=m["teacher_renders"], own_frame=m["own_frame_labels"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--steps", type=int, default=3072, help="Env steps per training run.")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--envs", type=int, default=8, help="Env processes of the main runs.")
    p.add_argument("--lp-threads", nargs="+", default=["default", "1"],
                   help="LP_NUM_THREADS values for the PPO lever runs ('default' = unset).")
    p.add_argument("--env-counts", type=int, nargs="+", default=[8, 2],
                   help="Env process counts for the PPO lever runs (LP_NUM_THREADS=1).")
    p.add_argument("--frames", type=int, default=100, help="Frames for the render limit.")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from rpd.data.tasks import get_task
    from rpd.data.views import CameraSpec
    from rpd.teachers.base import TeacherSpec
    from rpd.teachers.simple import TinyCNNTeacher

    work = Path(tempfile.mkdtemp(prefix="bench_pixels_"))  # teachers and runs
    out = args.out or work
    rows: list[dict[str, object]] = []
    for size in args.sizes:
        limit = render_limit(args.env, size, args.frames)
        rows.append(dict(run=f"render-bound limit {size} px, one process", size=size, **limit))
        shared = side_by_side_limit(args.env, size, args.frames)
        rows.append(dict(run=f"render-bound limit {size} px, a process per core", size=size,
                         **shared))
        teacher = work / f"teacher-{size}"
        if not (teacher / "teacher.json").is_file():
            spec = TeacherSpec(camera=CameraSpec("render", size, size),
                               control_mode="pd_ee_delta_pose", action_dim=7, proprio_dim=9,
                               tasks={args.env: get_task(args.env).instruction})
            TinyCNNTeacher.create(spec).save(teacher)
        variants = [("ppo", None, args.envs, lp) for lp in args.lp_threads]
        variants += [("ppo", None, n, "1") for n in args.env_counts if n != args.envs]
        variants += [("rpd", teacher, args.envs, args.lp_threads[-1])]
        for method, t, envs, lp in variants:
            name = f"{method}-{size}px-e{envs}-lp{lp}"
            run_dir = work / name
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            res = train_run(run_dir, args.env, size, args.steps, envs, t, lp)
            res["of_limit"] = res["steps_per_s"] / limit["limit_steps_per_s"]
            res["of_shared_limit"] = res["steps_per_s"] / shared["limit_steps_per_s"]
            rows.append(dict(run=name, size=size, method=method, envs=envs, lp_threads=lp,
                             **res))
            print(json.dumps(rows[-1]), flush=True)
    ppo = {r["size"]: r["steps_per_s"] for r in rows  # PPO-rgb in the RPD-rgb row's settings
           if r.get("method") == "ppo" and r["envs"] == args.envs
           and r["lp_threads"] == args.lp_threads[-1]}
    for r in rows:
        if "limit_steps_per_s" in r:
            r["steps_per_s"] = r["limit_steps_per_s"]
        else:
            r["of_ppo"] = r["steps_per_s"] / ppo[r["size"]]
    record.write(out, "bench_pixels", rows, [
        ("run", "run", "{}"), ("steps_per_s", "env steps/s", "{:.1f}"),
        ("step_ms", "physics ms / frame", "{:.1f}"), ("render_ms", "render ms / frame", "{:.1f}"),
        ("of_limit", "of the one-process limit", "{:.2f}"),
        ("of_shared_limit", "of the side-by-side limit", "{:.2f}"),
        ("of_ppo", "of PPO-rgb's rate", "{:.2f}"),
        ("live_calls", "live teacher calls", "{}"),
        ("teacher_renders", "teacher renders", "{}")], env=args.env, steps=args.steps)
    print("\n| run | env steps/s | of the limit: one process / a process per core "
          "| live calls | teacher renders |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        if "limit_steps_per_s" in r:
            print(f"| {r['run']} (step {r['step_ms']:.1f} ms + render {r['render_ms']:.1f} ms) "
                  f"| {r['limit_steps_per_s']:.0f} | | | |")
        else:
            print(f"| {r['run']} | {r['steps_per_s']:.1f} | {r['of_limit']:.2f} / "
                  f"{r['of_shared_limit']:.2f} | {r['live_calls']} | {r['teacher_renders']} |")
    print(f"\nwrote {out / 'bench_pixels.json'}")


if __name__ == "__main__":
    main()
