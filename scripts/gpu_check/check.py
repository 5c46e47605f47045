"""The GPU check (issue 16): rpd on ManiSkill's GPU simulation, one summary table.

On a machine with one NVIDIA GPU (see scripts/gpu_check/README.md for installing the wheels
without network), from the repository root:

    PYTHONPATH=.gpu/site:. python scripts/gpu_check/check.py [--out DIR]

Runs, each for a fixed number of env steps on PushCube-v1 (dense reward) with the GPU
simulation and the student on CUDA: state PPO and state RPD with a scripted teacher (512
envs), then a pixel student (PPO on 64 px frames, 256 envs), and prints env steps/s and
each run's final deterministic success. Then live labels: a camera teacher (cnn-tiny, random
weights, 64 px) labels the same 512 states restored and rendered 64 at a time and one at a
time; the row gives labels/s of each and the largest difference between them (should be ~0).
`--tiny` runs the same code on the CPU with 1 env and 8 states (no pixel student: a smoke
check the test suite runs).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--envs", type=int, default=512)
    p.add_argument("--state-steps", type=int, default=1_024_000)
    p.add_argument("--pixel-envs", type=int, default=256)
    p.add_argument("--pixel-steps", type=int, default=102_400)
    p.add_argument("--tiny", action="store_true", help="1 CPU env, a few rollouts.")
    a = p.parse_args()

    import numpy as np
    import torch

    from rpd.pipeline.train import TrainConfig, train
    from rpd.teachers.scripted import ScriptedTeacher

    backend, device = ("cpu", "cpu") if a.tiny else ("gpu", "cuda")
    if a.tiny:
        a.envs, a.pixel_envs, a.state_steps, a.pixel_steps = 1, 1, 128, 64
    out = a.out or Path(tempfile.mkdtemp(prefix="rpd_gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    teacher = out / "teacher"
    if not (teacher / "teacher.json").is_file():
        ScriptedTeacher.build(a.env).save(teacher)
    n_steps = 50 if not a.tiny else 16
    common = dict(env_id=a.env, reward="dense", sim_backend=backend, device=device,
                  n_steps=n_steps, n_epochs=4, eval_every=10**9,
                  eval_episodes=1 if a.tiny else 16, seed=0)
    size = 36 if a.tiny else 64

    def batch(envs: int) -> int:  # ManiSkill's PPO baseline: 32 minibatches per epoch
        return max(2, n_steps * envs // 32)

    runs = {
        "ppo-state": dict(no_teacher=True, envs=a.envs, steps=a.state_steps),
        "rpd-state (scripted teacher)": dict(
            teacher=teacher, envs=a.envs, steps=a.state_steps, live_budget=4096,
            lambda_schedule="cosine", lambda_decay_steps=int(0.6 * a.state_steps)),
        f"ppo-rgb {size} px": dict(no_teacher=True, obs="rgb", student_image_size=size,
                              envs=a.pixel_envs, steps=a.pixel_steps),
    }
    if a.tiny:  # the smoke check keeps the test suite short: the pixel row is the same code
        runs = {k: v for k, v in runs.items() if not k.startswith("ppo-rgb")}
    rows = []
    for i, (name, kw) in enumerate(runs.items()):
        cfg = TrainConfig(out=out / f"run{i}", batch_size=batch(int(kw["envs"])),
                          **common, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        try:
            m = train(cfg)["metrics"]
            rows.append(dict(run=name, envs=cfg.envs, steps=m["steps"],
                             steps_per_s=round(m["train_steps_per_s"]),
                             success=m["eval_success"],
                             live_calls=m["live_teacher_calls"],
                             wall_s=round(time.perf_counter() - t0, 1)))
        except Exception as e:  # report and go on: one table even when a row fails
            rows.append(dict(run=name, error=f"{type(e).__name__}: {e}"[:300]))
        print(json.dumps(rows[-1]), flush=True)

    rows.append(label_row(a.env, backend, device, states=8 if a.tiny else 512))
    print(json.dumps(rows[-1]), flush=True)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    head = (f"{time.strftime('%Y-%m-%d')}, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np.__version__}, {a.env} dense")
    (out / "gpu_check.json").write_text(json.dumps(dict(machine=head, rows=rows), indent=2))
    print(f"\n{head}\n")
    print("| run | envs | env steps | env steps/s | final success | live teacher calls |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['run']} | failed: {r['error']} | | | | |")
        elif r["run"].startswith("labels"):
            print(f"| {r['run']} | batch {r['batch']} | {r['states']} states | "
                  f"{r['batched_per_s']} labels/s (one at a time: {r['single_per_s']}) | "
                  f"max diff {r['max_diff']:.2g} | |")
        else:
            print(f"| {r['run']} | {r['envs']} | {r['steps']} | {r['steps_per_s']} | "
                  f"{r['success']:.2f} | {r['live_calls']} |")


def label_row(env_id: str, backend: str, device: str, states: int, batch: int = 64) -> dict:
    """Live labels of `states` env states by a camera teacher, batched and one at a time."""
    import numpy as np

    from rpd.data.env_state import get_env_state
    from rpd.data.vec_envs import EnvConfig, make_env
    from rpd.data.views import CameraSpec
    from rpd.labels.live import TeacherLabeler
    from rpd.teachers.base import TeacherSpec
    from rpd.teachers.simple import TinyCNNTeacher

    name = f"labels (cnn-tiny 64 px, restore + render, {backend})"
    try:
        spec = TeacherSpec(camera=CameraSpec("render", 64, 64), control_mode="pd_ee_delta_pose",
                           action_dim=7, proprio_dim=9, tasks={env_id: "push the cube"})
        teacher = TinyCNNTeacher.create(spec).to(device)
        env = make_env(EnvConfig(env_id, sim_backend=backend))
        rng = np.random.default_rng(0)
        flat = []
        env.reset(seed=0)
        for t in range(states):
            env.step(rng.uniform(-1, 1, (1, 7)).astype(np.float32))
            flat.append(get_env_state(env)[0])
            if t % 25 == 24:
                env.reset(seed=t)
        env.close()
        flat = np.stack(flat)
        out = {}
        for b in (batch, 1):
            with TeacherLabeler(teacher, env_id, batch_size=b, sim_backend=backend) as lab:
                lab.label_with_obs(flat[:2])  # make the envs before timing
                t0 = time.perf_counter()
                out[b] = lab.label_with_obs(flat)
                out[f"{b}/s"] = round(states / (time.perf_counter() - t0), 1)
        diff = max(float(np.abs(out[batch][i] - out[1][i]).max()) for i in (0, 1))
        return dict(run=name, batch=batch, states=states, batched_per_s=out[f"{batch}/s"],
                    single_per_s=out["1/s"], max_diff=diff)
    except Exception as e:
        return dict(run=name, error=f"{type(e).__name__}: {e}"[:300])


if __name__ == "__main__":
    main()
