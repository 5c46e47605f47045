"""Labels/s of `rpd cache` (build_cache) with 1 and 2 dask workers on this machine.

Labels teacher closed-loop rollouts of PickCube-v1 with a `cnn-tiny` teacher on the 128x128
render camera (each label = restore/step + render + teacher forward), into a fresh store per
run. Reports the end-to-end rate (includes the cluster start and each worker's first render,
which compiles the renderer's shaders: ~7-14 s per process with Mesa's lavapipe) and the
steady rate (rows finished after every worker's first unit, over that time).

    python benchmarks/bench_cache_labels.py [--rollouts 12] [--horizon 50] [--workers 1 2]
        [--out DIR]

With `--out`, writes OUT/bench_cache_labels.json (`benchmarks/record.py`), the record the
Benchmarks page shows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rollouts", type=int, default=12)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=128, help="teacher camera size (pixels)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rpd.data.views import CameraSpec
    from rpd.pipeline.cache import CacheConfig, build_cache
    from rpd.teachers.base import TeacherSpec
    from rpd.teachers.simple import TinyCNNTeacher

    with tempfile.TemporaryDirectory() as tmp:
        spec = TeacherSpec(camera=CameraSpec("render", args.size, args.size),
                           control_mode="pd_ee_delta_pose", action_dim=7, chunk_size=4,
                           proprio_dim=9, tasks={"PickCube-v1": "pick up the red cube"})
        ckpt = TinyCNNTeacher(spec, {"seed": 0}).save(Path(tmp) / "teacher")
        print(f"{'workers':>7} {'labels':>7} {'wall s':>7} {'labels/s':>9} "
              f"{'steady labels/s':>15}")
        rows = []
        for w in args.workers:
            cfg = CacheConfig(teacher=ckpt, env_id="PickCube-v1", out=Path(tmp) / f"s{w}",
                              rollouts=args.rollouts, horizon=args.horizon, workers=w,
                              key_scale="1")
            done: list[tuple[float, int]] = []
            t0 = time.perf_counter()
            result = build_cache(cfg, progress=lambda u, r, done=done: done.append(
                (time.perf_counter(), r)))
            wall = time.perf_counter() - t0
            warm = done[w - 1][0] if len(done) > w else float("nan")
            steady_rows = sum(r for _, r in done[w:])
            steady = steady_rows / (done[-1][0] - warm) if len(done) > w else float("nan")
            print(f"{w:>7} {result.rows_written:>7} {wall:>7.1f} "
                  f"{result.rows_written / wall:>9.1f} {steady:>15.1f}", flush=True)
            rows.append(dict(workers=w, labels=result.rows_written, wall_s=wall,
                             labels_per_s=result.rows_written / wall, steady_per_s=steady))
    if args.out is not None:
        record.write(args.out, "bench_cache_labels", rows, [
            ("workers", "workers", "{}"), ("labels", "labels", "{}"),
            ("wall_s", "wall (s)", "{:.1f}"), ("labels_per_s", "labels/s end to end", "{:.1f}"),
            ("steady_per_s", "labels/s steady", "{:.1f}")],
            rollouts=args.rollouts, horizon=args.horizon, teacher_camera=args.size)


if __name__ == "__main__":
    main()
