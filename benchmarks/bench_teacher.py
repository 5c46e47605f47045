"""Teacher inference throughput: frames/s of batched `act` on this machine.

    python benchmarks/bench_teacher.py --size small --image-size 128 --batch 32 64 128 [--out DIR]

Builds an untrained octo-small teacher (speed does not depend on the weights), feeds random
uint8 frames with an instruction and joint positions, and reports frames/s per batch size
over at least `--seconds` of calls after one warm-up call. Uses all torch threads unless
`--threads` is given. With `--out`, writes OUT/bench_teacher.json (`benchmarks/record.py`),
the record the Benchmarks page shows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import record
import torch

from rpd.data.views import CameraSpec
from rpd.teachers.base import TeacherBatch, TeacherSpec
from rpd.teachers.octo import OctoTeacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32, 128])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    s = args.image_size
    spec = TeacherSpec(CameraSpec("render", s, s), "pd_ee_delta_pose", 7, chunk_size=8,
                       proprio_dim=9, tasks={"PickCube-v1": "pick up the red cube"})
    teacher = OctoTeacher.create(spec, args.size, dict(q01=[-1.0] * 7, q99=[1.0] * 7))
    rng = np.random.default_rng(0)
    rows = []
    for bs in args.batch:
        batch = TeacherBatch(rng.integers(0, 256, (bs, s, s, 3), dtype=np.uint8),
                             ["pick up the red cube and move it to the goal"] * bs,
                             rng.normal(size=(bs, 9)).astype(np.float32))
        teacher.act(batch)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            teacher.act(batch)
            n += bs
        fps = n / (time.perf_counter() - t0)
        rows.append(dict(size=args.size, params=teacher.num_parameters, image_size=s, batch=bs,
                         threads=torch.get_num_threads(), frames_per_s=round(fps, 1)))
        print(json.dumps(rows[-1]))
    if args.out is not None:
        record.write(args.out, "bench_teacher", rows, [
            ("size", "octo size", "{}"), ("params", "parameters", "{:,}"),
            ("image_size", "frame (px)", "{}"), ("batch", "batch", "{}"),
            ("threads", "torch threads", "{}"), ("frames_per_s", "frames/s", "{:.1f}")])


if __name__ == "__main__":
    main()
