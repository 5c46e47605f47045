"""Measured how closely the distill term makes the student copy a learnable teacher.

A teacher whose answer is a known, learnable function of the state — `state-proprio`:
action = tanh(3 · joint positions[:7]), given proprio = the robot's joint positions — so the
copying gap is measurable without waiting for task success: after N env steps of RPD, the MSE
between the student's mean and the teacher's label on the last rollout (train/distill_loss,
summed over the 7 action dims) and the fraction of PPO epochs run before target_kl stopped them.

Varied one at a time from `rpd train`'s defaults (λ 1, n_epochs 8, max_grad_norm 0.5, no KL
early stop, no offline phase): λ 10, n_epochs 16, max_grad_norm 100 (no
clipping), target_kl 0.2 (the RPD code's, and rpd's earlier default), and an offline phase
of 2000 steps on the labels the default run stored.

    python benchmarks/experiments/bench_train_distill.py [--env PushCube-v1] [--steps 2048]
        [--envs 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher


@register_teacher("state-proprio")
class ProprioTeacher(Teacher):
    """action = tanh(proprio @ W), W = 3 · I[9, 7]: a function of the state (for benchmarks)."""

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        super().__init__(spec, config, action_stats)
        self.weight = np.eye(spec.proprio_dim, spec.action_dim, dtype=np.float32) * 3.0

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        return np.tanh(batch.proprio @ self.weight)[:, None].astype(np.float32)

    def _save_weights(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"weight": self.weight}, str(path))

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> ProprioTeacher:
        return cls(TeacherSpec.from_dict(meta["spec"]), meta["config"], meta["action_stats"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--steps", type=int, default=2048)
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from rpd.data.views import CameraSpec
    from rpd.pipeline.train import TrainConfig, train

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_distill_"))
    out.mkdir(parents=True, exist_ok=True)
    spec = TeacherSpec(camera=CameraSpec("render", 32, 32), control_mode="pd_ee_delta_pose",
                       action_dim=7, proprio_dim=9, tasks={args.env: "copy me"})
    teacher = ProprioTeacher(spec, {}).save(out / "teacher")
    common = dict(env_id=args.env, teacher=teacher, steps=args.steps, envs=args.envs,
                  eval_every=10**9, eval_episodes=2, seed=0)
    variants = {
        "default": {},
        "lambda=10": dict(lam=10.0),
        "n_epochs=16": dict(n_epochs=16),
        "no grad clip": dict(max_grad_norm=100.0),
        "target_kl=0.2": dict(target_kl=0.2),
        "offline 2000": dict(cache=out / "default" / "cache", offline_steps=2000),
    }
    print(f"{'variant':<14} {'distill MSE':>11} {'epochs run':>10} {'grad norm':>10} "
          f"{'offline MSE':>16}  ({args.env}, {args.envs} envs, {args.steps} steps)")
    for name, kw in variants.items():
        run = out / name.replace(" ", "_").replace("=", "")
        meta = train(TrainConfig(out=run, **common, **kw))
        off = meta["metrics"]["offline"]
        off_s = "-" if off is None else f"{off['mse_start']:.3f}->{off['mse_end']:.3f}"
        print(f"{name:<14} {_last(run, 'train/distill_loss'):>11.4f} "
              f"{_mean(run, 'train/epochs_done'):>10.2f} {_mean(run, 'train/grad_norm'):>10.2f} "
              f"{off_s:>16}", flush=True)


def _scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[float] = []
    for events in sorted((run / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values += [e.value for e in acc.Scalars(tag)]
    return values


def _last(run: Path, tag: str) -> float:
    v = _scalars(run, tag)
    return v[-1] if v else float("nan")


def _mean(run: Path, tag: str) -> float:
    v = _scalars(run, tag)
    return float(np.mean(v)) if v else float("nan")


if __name__ == "__main__":
    main()
