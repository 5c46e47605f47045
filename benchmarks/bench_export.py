"""Time per action of an exported student against the student in SB3 and rpd's teachers.

One process, one thread (torch and onnxruntime), batch 1: what a robot's control loop pays
per step. Each row is the median over `--calls` calls (at most `--seconds` of them) after
three warm-up calls.

1. Students: a state student and a pixel student (`--obs rgb`, 64 px, the paper's setting)
   with rpd's default architecture (NatureCNN, 256-256 MLP heads), trained for a few steps
   (speed does not depend on the weights) unless `--state-run`/`--pixel-run` name runs, each
   timed as SB3 runs it (`model.predict(obs, deterministic=True)`) and exported (`rpd export`)
   to ONNX (onnxruntime) and TorchScript (torch.jit), on an observation recorded in its env.
   Parameters: the actor's (what computes the action; the critic is not exported). Size: the
   file a deployer ships (the SB3 .zip holds critic and optimiser state too).
2. Teachers: every kind rpd builds in code (no downloads): `cnn-tiny` and `octo-small`
   (its default `small` size) on 128 px frames, and the tiny `openvla` and `pi0` test
   configurations (random weights; a real OpenVLA has 7B parameters), timed as `act` on one
   frame, instruction and joint positions.

    python benchmarks/bench_export.py [--calls 300] [--seconds 10] [--teachers ...] [--out DIR]

Prints a markdown table and writes OUT/bench_export.json (`benchmarks/record.py`), the record
the Deployment page shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import record
import torch

TEACHERS = ("cnn-tiny", "octo-small", "openvla", "pi0")
STUDENT_ENV = "PushCube-v1"
TEACHER_SIZE = 128
"""Teacher camera (px): rpd finetune-teacher's default --image-size."""


def time_per_call(call: Callable[[], Any], calls: int, seconds: float) -> tuple[float, int]:
    """(median milliseconds per call, calls timed) after three warm-up calls."""
    for _ in range(3):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < calls and (len(times) < 5 or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, len(times)


def train_student(out: Path, steps: int, *args: str) -> Path:
    """A short `rpd train --no-teacher` run with the default architecture (a subprocess)."""
    cmd = [sys.executable, "-m", "rpd.cli", "train", "--env", STUDENT_ENV, "--no-teacher",
           "--envs", "1", "--steps", str(steps), "--n-steps", str(steps), "--batch-size", "32",
           "--n-epochs", "1", "--eval-every", str(10 * steps), "--eval-episodes", "1",
           "--out", str(out), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def student_rows(name: str, run: Path, out: Path, calls: int, seconds: float
                 ) -> list[dict[str, Any]]:
    from rpd.pipeline.evaluate import REMAKE_STUDENT, load_model
    from rpd.pipeline.export import (
        ExportConfig,
        ExportedPolicy,
        actor_graph,
        export_student,
        record_observations,
    )

    model = load_model(run / "student.zip", "--student", REMAKE_STUDENT, device="cpu")
    env = json.loads((run / "student.json").read_text())["env"]
    observations, _ = record_observations(model, env, 1)
    inputs = None
    rows = []
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        path = out / f"{name}{suffix}"
        meta = export_student(ExportConfig(run, fmt, path, force=True, verify_steps=8))
        inputs = [i["name"] for i in meta["inputs"]]
        policy = ExportedPolicy(path, meta, threads=1)
        ms, n = time_per_call(lambda p=policy: p.predict(observations), calls, seconds)
        rows.append(dict(policy=f"{name} student, {fmt}", runtime=(
            "onnxruntime" if fmt == "onnx" else "torch.jit"), ms=ms, calls=n,
            bytes=path.stat().st_size))
    assert inputs is not None
    params = sum(p.numel() for p in actor_graph(model.policy, inputs).parameters())
    ms, n = time_per_call(lambda: model.predict(observations, deterministic=True), calls,
                          seconds)
    rows.insert(0, dict(policy=f"{name} student, SB3 predict", runtime="torch (SB3)", ms=ms,
                        calls=n, bytes=(run / "student.zip").stat().st_size))
    for row in rows:
        row["params"] = params
    return rows


def make_teacher(kind: str) -> Any:
    """An untrained teacher of `kind` built in code, as `rpd finetune-teacher` starts one."""
    from rpd.data.views import CameraSpec
    from rpd.teachers.base import TeacherSpec, teacher_class

    stats = dict(q01=[-1.0] * 7, q99=[1.0] * 7, mean=[0.0] * 7, std=[0.5] * 7)
    spec = TeacherSpec(CameraSpec("render", TEACHER_SIZE, TEACHER_SIZE), "pd_ee_delta_pose", 7,
                       chunk_size=8, proprio_dim=9, tasks={STUDENT_ENV: "push the cube"})
    size = "small" if kind in ("cnn-tiny", "octo-small") else "tiny"
    return teacher_class(kind).create(spec, size, stats)  # type: ignore[attr-defined]


def teacher_row(kind: str, calls: int, seconds: float) -> dict[str, Any]:
    from rpd.teachers.base import TeacherBatch

    teacher = make_teacher(kind)
    rng = np.random.default_rng(0)
    batch = TeacherBatch(rng.integers(0, 256, (1, TEACHER_SIZE, TEACHER_SIZE, 3), np.uint8),
                         ["push the cube to the goal"],
                         rng.normal(size=(1, 9)).astype(np.float32))
    ms, n = time_per_call(lambda: teacher.act(batch), calls, seconds)
    size = "tiny test config" if kind in ("openvla", "pi0") else "default size"
    return dict(policy=f"teacher {kind} ({size})", runtime="torch", ms=ms, calls=n,
                params=sum(p.numel() for p in teacher.net.parameters()), bytes=None)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| policy | runs on | parameters | file | ms per action (median) | calls |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:.2f} MB" if r["bytes"] is not None else "-"
        lines.append(f"| {r['policy']} | {r['runtime']} | {r['params']:,} | {size} | "
                     f"{r['ms']:.3f} | {r['calls']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300, help="Timed calls per row (at most).")
    p.add_argument("--seconds", type=float, default=10.0, help="Time cap per row.")
    p.add_argument("--teachers", nargs="*", default=list(TEACHERS), choices=TEACHERS)
    p.add_argument("--state-run", type=Path, default=None,
                   help="A state student run to time [default: train one briefly].")
    p.add_argument("--pixel-run", type=Path, default=None,
                   help="A pixel student run to time [default: train one briefly].")
    p.add_argument("--train-steps", type=int, default=64)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    state_run = args.state_run or train_student(work / "state", args.train_steps)
    pixel_run = args.pixel_run or train_student(work / "pixel", args.train_steps, "--obs", "rgb")
    rows = [*student_rows("state", state_run, work, args.calls, args.seconds),
            *student_rows("pixel", pixel_run, work, args.calls, args.seconds)]
    rows += [teacher_row(kind, args.calls, args.seconds) for kind in args.teachers]
    for r in rows:
        r["mb"] = None if r["bytes"] is None else r["bytes"] / 1e6
    record.write(out, "bench_export", rows, [
        ("policy", "policy", "{}"), ("runtime", "runs on", "{}"),
        ("params", "parameters", "{:,}"), ("mb", "file (MB)", "{:.2f}"),
        ("ms", "ms per action (median)", "{:.3f}"), ("calls", "calls timed", "{}")],
        threads=torch.get_num_threads(), batch=1, torch=torch.__version__,
        onnxruntime=__import__("onnxruntime").__version__)
    print(table(rows))


if __name__ == "__main__":
    main()
