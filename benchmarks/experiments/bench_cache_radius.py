"""Measured the teacher cache's hit rate and label error as functions of the hit radius.

A teacher whose actions depend on the state is needed for the label error to mean anything,
so without --teacher this trains a `cnn-tiny` teacher by behaviour cloning on motion-planned
PickCube-v1 demos (128x128 render camera, a few minutes on CPU). Then:

- store: `rpd cache` (build_cache, 2 workers) over the training demos' states, the teacher's
  own rollouts and noisy rollouts (sigma 0.1);
- held out: states of other demos and of noisy rollouts with other seeds, labelled live;
- for each radius: the fraction of held-out states that hit, and on the hits the mean
  ||cached action - live action||, next to the same for a constant (mean-action) predictor.

    python benchmarks/experiments/bench_cache_radius.py [--teacher DIR] [--demos 30] [--rollouts 10]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV = "PickCube-v1"
RADII = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def demo_samples(labeler, h5: Path, episode_ids: list[int]):
    """(env states [N, S], images [N, H, W, 3], proprio [N, P], actions [N, A]) of demo steps."""
    from rpd.data.env_state import set_env_state
    from rpd.data.trajectories import open_trajectory
    from rpd.pipeline.cache import _demo_states

    traj = open_trajectory(h5)
    actions = {ep["episode_id"]: arr["actions"] for ep, arr in traj.iter_episodes()}
    states, images, proprio, acts = [], [], [], []
    for e in episode_ids:
        s, _ = _demo_states(labeler.env, str(h5), e)
        for t in range(len(actions[e])):
            set_env_state(labeler.env, s[t])
            img, p = labeler.observe()
            states.append(s[t:t + 1])
            images.append(img)
            proprio.append(p)
            acts.append(actions[e][t:t + 1])
    return (np.concatenate(states), np.concatenate(images), np.concatenate(proprio),
            np.concatenate(acts).astype(np.float32))


def train_bc(teacher, images, proprio, actions, epochs: int, seed: int = 0) -> None:
    """Behaviour cloning of the first action of each chunk, in the teacher's [-1, 1] units."""
    import torch
    import torch.nn.functional as F

    lo = np.asarray(teacher.action_stats["q01"], np.float32)
    hi = np.asarray(teacher.action_stats["q99"], np.float32)
    target = torch.as_tensor(np.clip((actions - lo) / (hi - lo) * 2 - 1, -1, 1))
    size = int(teacher.config["input_size"])
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    p = torch.as_tensor(proprio)
    model = teacher.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), 64):
            j = perm[i:i + 64]
            loss = F.mse_loss(model(x[j], p[j])[:, 0], target[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(j)
        if epoch % 10 == 9:
            print(f"  bc epoch {epoch + 1}: mse {total / len(x):.4f}", flush=True)
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--demos", type=int, default=30, help="demos to generate (5 held out)")
    ap.add_argument("--rollouts", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep files here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from rpd.data.trajectories import open_trajectory
    from rpd.data.views import CameraSpec
    from rpd.labels.live import TeacherLabeler
    from rpd.labels.lookup import TeacherCache
    from rpd.pipeline.cache import CacheConfig, build_cache
    from rpd.teachers.base import TeacherSpec, load_teacher
    from rpd.teachers.simple import TinyCNNTeacher

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_radius_"))
    demo_dir = work / "demos"
    h5 = demo_dir / "trajectory.none.pd_ee_delta_pose.physx_cpu.h5"
    if not h5.is_file():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rpd.cli", "demos", "generate", "--env", ENV,
                        "--num", str(args.demos), "--out", str(demo_dir), "--workers", "2"],
                       check=True)
        print(f"demos: {time.perf_counter() - t:.0f} s")
    episodes = [ep["episode_id"] for ep in open_trajectory(h5).episodes]
    train_eps, held_eps = episodes[:-5], episodes[-5:]

    if args.teacher is None:
        actions = np.concatenate([a["actions"] for _, a in open_trajectory(h5).iter_episodes()])
        stats = {"q01": np.quantile(actions, 0.01, 0).tolist(),
                 "q99": np.quantile(actions, 0.99, 0).tolist()}
        spec = TeacherSpec(camera=CameraSpec("render", 128, 128),
                           control_mode="pd_ee_delta_pose", action_dim=7, chunk_size=1,
                           proprio_dim=9, tasks={ENV: "pick up the red cube and move it to "
                                                      "the goal"})
        teacher = TinyCNNTeacher(spec, {"seed": 0}, stats)
        with TeacherLabeler(teacher, ENV) as lab:
            t = time.perf_counter()
            _, images, proprio, acts = demo_samples(lab, h5, train_eps)
            print(f"rendered {len(images)} training frames: {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        train_bc(teacher, images, proprio, acts, args.epochs)
        print(f"bc training: {time.perf_counter() - t:.0f} s")
        ckpt = teacher.save(work / "teacher")
    else:
        ckpt = args.teacher
    teacher = load_teacher(ckpt)

    # Every demo is labelled into the store; the held-out demos' rows are left out of the
    # index below (by episode id).
    store = work / "store"
    t = time.perf_counter()
    res = build_cache(CacheConfig(teacher=ckpt, env_id=ENV, out=store, demos=[h5],
                                  rollouts=args.rollouts, noise=0.1, horizon=100,
                                  workers=args.workers))
    print(f"store: {res.entries} entries {res.by_source}, teacher rollout success "
          f"{res.rollout_success}, {time.perf_counter() - t:.0f} s")

    with TeacherLabeler(teacher, ENV, max_episode_steps=100) as lab:
        held_states = [demo_samples(lab, h5, held_eps)[0]]
        rng = np.random.default_rng(7)
        for i in range(5):
            held_states.append(lab.rollout(10_000 + i, 100, noise=0.1, rng=rng)["env_state"])
        held = np.concatenate(held_states)
        live, held_obs = lab.label_with_obs(held)
    print(f"held out: {len(held)} states ({len(held_states[0])} from 5 unseen demos)")

    cache = TeacherCache.open(store, teacher, radius=0.0)
    # Drop the held-out demos' own rows from the index (they were labelled with the rest).
    from rpd.data.store import TeacherStore

    rows = TeacherStore.open(store).read()
    keep = ~((rows.source == 0) & np.isin(rows.episode, held_eps))
    const = rows.teacher_action[keep].mean(0)
    const_err = np.linalg.norm(live - const, axis=1).mean()
    print(f"index: {int(keep.sum())} entries; mean ||live action|| "
          f"{np.linalg.norm(live, axis=1).mean():.4f}; constant-predictor error {const_err:.4f}")
    from rpd.labels.lookup import NearestKeyIndex

    cache._index = NearestKeyIndex(rows.key[keep])
    cache._actions, cache._actions_flat = [rows.teacher_action[keep]], rows.teacher_action[keep]
    keys = cache.keys(held_obs)
    print(f"{'radius':>6} {'hit rate':>8} {'label error (hits)':>19} {'p90 error':>9}")
    for r in RADII:
        cache.radius = r
        got, hit = cache.lookup(keys)
        err = np.linalg.norm(got - live, axis=1)[hit]
        mean = f"{err.mean():.4f}" if hit.any() else "-"
        p90 = f"{np.quantile(err, 0.9):.4f}" if hit.any() else "-"
        print(f"{r:>6} {hit.mean():>8.3f} {mean:>19} {p90:>9}")
    print(f"(radius = RMS key distance per dim, K={cache.key_spec.key_dim}; "
          f"{math.sqrt(cache.key_spec.key_dim):.2f}x that in Euclidean key units)")


if __name__ == "__main__":
    main()
