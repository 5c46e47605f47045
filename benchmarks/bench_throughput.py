"""CPU throughput of `rpd train`, in one run, against the physics limit.

Rows, all on one task (state observations, dense reward), in one sitting (give it the machine):

1. `physics limit`: one process steps the env with random actions (no rendering), best of
   three tries (one try varied from 193 to 269 steps/s on the same idle machine); the limit
   for the machine is cores x that rate.
2. `one env in process`: one env through rpd's wrappers (seeded resets, numpy conversion,
   env states), no pipes: what the wrappers cost on top of row 1.
3. `vec-env E`: SB3's SubprocVecEnv of E rpd envs, one process each, stepping random actions
   (no learning); `vec-env E in W workers`: the same E envs in W processes (`rpd.data.workers`).
4. `ppo`: `rpd train --no-teacher`, one process per env, then with each `--env-workers W`,
   with the share of its time spent in gradient updates.
5. `rpd-live`: RPD with a scripted teacher labelling live (restore the state, act).
6. `rpd-store`: RPD whose every lookup hits a store (the cache path alone).
Rows 5 and 6 use `rpd train`'s default workers (one per core).

Goals: PPO ≥ 0.7 x the physics limit; RPD from a store ≥ 0.9 x PPO.

    python benchmarks/bench_throughput.py [--env PushCube-v1] [--steps 8192] [--envs 8]
        [--vec-envs 2 8] [--workers 2] [--out DIR]

Prints a markdown table and writes OUT/bench_throughput.json (`benchmarks/record.py`), the
record the Benchmarks page shows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import record


def physics_rate(env_id: str, steps: int) -> float:
    """Env steps/s of one process stepping random actions."""
    import numpy as np

    from rpd.data.vec_envs import EnvConfig, make_env

    env = make_env(EnvConfig(env_id))
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
        t0 = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if bool(terminated.any()) or bool(truncated.any()):
                env.reset()
        return steps / (time.perf_counter() - t0)
    finally:
        env.close()


def vec_rate(env_id: str, envs: int, steps: int, workers: int | None = None) -> float:
    """Env steps/s of `envs` rpd envs in `workers` processes stepping random actions."""
    import numpy as np

    from rpd.data.vec_envs import EnvConfig, make_vec_env

    venv = make_vec_env(EnvConfig(env_id), envs, seed=0, workers=workers)
    try:
        venv.reset()
        rng = np.random.default_rng(0)
        n = max(1, steps // envs)
        t0 = time.perf_counter()
        for _ in range(n):
            venv.step(rng.uniform(-1, 1, (envs, 7)).astype(np.float32))
        return n * envs / (time.perf_counter() - t0)
    finally:
        venv.close()


def train_rate(out: Path, **kwargs: object) -> dict[str, float]:
    """One `rpd train` (in process): env steps/s and the time per rollout spent in updates."""
    from rpd.pipeline.train import TrainConfig, train

    meta = train(TrainConfig(out=out, eval_every=10**9, eval_episodes=1, seed=0, **kwargs))  # type: ignore[arg-type]
    m = meta["metrics"]
    return dict(steps_per_s=m["train_steps_per_s"], update_share=m["update_share"],
                live_calls_per_step=m["live_teacher_calls_per_step"],
                hit_rate=m["cache_hit_rate"] or 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="PushCube-v1")
    p.add_argument("--steps", type=int, default=8192, help="Env steps per training run.")
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--vec-envs", type=int, nargs="*", default=[2, 8])
    p.add_argument("--workers", type=int, nargs="*", default=[2],
                   help="Worker-process counts to try for --envs envs (vec-env and ppo rows).")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from rpd.data.devices import limit_cpu_threads
    from rpd.teachers.scripted import ScriptedTeacher

    limit_cpu_threads()
    work = Path(tempfile.mkdtemp(prefix="bench_throughput_"))  # teacher, runs and store
    out = args.out or work
    cores = os.cpu_count() or 1
    rows: list[dict[str, object]] = []
    one = max(physics_rate(args.env, min(args.steps, 2000)) for _ in range(3))
    limit = cores * one
    rows.append(dict(run=f"physics limit ({cores} cores x {one:.0f} steps/s)",
                     steps_per_s=limit))
    rows.append(dict(run="one env in process (rpd's wrappers, no pipes)",
                     steps_per_s=vec_rate(args.env, 1, min(args.steps, 2000))))
    for n in args.vec_envs:
        rows.append(dict(run=f"vec-env {n}, one process each (random actions)",
                         steps_per_s=vec_rate(args.env, n, args.steps, workers=n)))
    for w in args.workers:
        rows.append(dict(run=f"vec-env {args.envs} in {w} workers (random actions)",
                         steps_per_s=vec_rate(args.env, args.envs, args.steps, workers=w)))
    teacher = work / "teacher"
    if not (teacher / "teacher.json").is_file():
        ScriptedTeacher.build(args.env).save(teacher)
    common = dict(env_id=args.env, steps=args.steps, envs=args.envs)
    if min(args.envs, cores) < args.envs:  # else the default row below is this one
        rows.append(dict(run=f"ppo, one process per env (--env-workers {args.envs})",
                         **train_rate(work / "ppo-each", no_teacher=True,
                                      env_workers=args.envs, **common)))
    for w in args.workers:
        rows.append(dict(run=f"ppo --env-workers {w}", **train_rate(
            work / f"ppo-w{w}", no_teacher=True, env_workers=w, **common)))
    ppo = train_rate(work / "ppo", no_teacher=True, **common)
    rows.append(dict(run="ppo (rpd train --no-teacher, default workers)", **ppo))
    live = train_rate(work / "rpd-live", teacher=teacher, label_model=False, **common)
    rows.append(dict(run="rpd-live (scripted teacher, every state labelled)", **live))
    store = train_rate(work / "rpd-store", teacher=teacher, cache=work / "rpd-live" / "cache",
                       cache_radius=1e6, offline_steps=0, label_model=False, **common)
    rows.append(dict(run="rpd-store (every lookup a hit)", **store))
    for r in rows:
        r["of_limit"] = float(r["steps_per_s"]) / limit  # type: ignore[arg-type]
        if "update_share" in r:  # a training row
            r["of_ppo"] = float(r["steps_per_s"]) / ppo["steps_per_s"]  # type: ignore[arg-type]
    record.write(out, "bench_throughput", rows, [
        ("run", "run", "{}"), ("steps_per_s", "env steps/s", "{:.0f}"),
        ("of_limit", "of the physics limit", "{:.2f}"),
        ("of_ppo", "of PPO's rate", "{:.2f}"), ("update_share", "time in updates", "{:.2f}"),
        ("live_calls_per_step", "live teacher calls / step", "{:.2f}"),
        ("hit_rate", "store hit rate", "{:.2f}")],
        env=args.env, envs=args.envs, steps=args.steps,
        store_over_ppo=store["steps_per_s"] / ppo["steps_per_s"],
        ppo_over_limit=ppo["steps_per_s"] / limit)
    print(f"\n{args.env}, {args.envs} envs, {args.steps} steps per training run\n")
    print("| run | env steps/s | of physics limit | update share | live calls / step | hit rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        share = f"{float(r['update_share']):.2f}" if "update_share" in r else ""  # type: ignore[arg-type]
        print(f"| {r['run']} | {float(r['steps_per_s']):.0f} | {float(r['of_limit']):.2f} | "  # type: ignore[arg-type]
              f"{share} | {r.get('live_calls_per_step', '')} | {r.get('hit_rate', '')} |")
    print(f"\nRPD from a store / PPO: {store['steps_per_s'] / ppo['steps_per_s']:.2f}; "
          f"PPO / physics limit: {ppo['steps_per_s'] / limit:.2f}")


if __name__ == "__main__":
    main()
