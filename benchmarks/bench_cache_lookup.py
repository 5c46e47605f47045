"""Lookups/s of the teacher-cache index at 1e5 and 1e6 entries: cKDTree vs faiss vs torch.

Keys are synthetic but shaped like the real ones: K = 42 (PickCube-v1's state observation),
episodes of 100 steps that are smooth random walks in an 8-D latent space mapped linearly
into 42-D plus a little per-dim noise, standardised per dim (as the "std" key spec does).
Half the queries are stored keys moved by 0.2 radius (hits), half are states of new
episodes (mostly misses): what the trainer asks after a rollout. The radius is the RMS key
distance per dim (rpd.labels.lookup.DEFAULT_RADIUS = 0.05); larger radii cost more.

    python benchmarks/bench_cache_lookup.py [--sizes 100000 1000000] [--radii 0.05 0.2] [--out DIR]

With `--out`, writes OUT/bench_cache_lookup.json (`benchmarks/record.py`), the record the
Benchmarks page shows.

faiss-cpu is optional (`pip install faiss-cpu`); without it that row is skipped. Each
method runs single-threaded (torch.set_num_threads(1), faiss.omp_set_num_threads(1)), as in
a training process that owns a ManiSkill env.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import record

K = 42


def synthetic_keys(n: int, rng: np.random.Generator, steps: int = 100) -> np.ndarray:
    episodes = -(-n // steps)
    latent = np.cumsum(rng.normal(0, 0.1, (episodes, steps, 8)), axis=1)
    latent += rng.normal(0, 1.0, (episodes, 1, 8))
    proj = np.random.default_rng(12345).normal(size=(8, K))  # the same "task" every call
    x = latent.reshape(-1, 8)[:n] @ proj + rng.normal(0, 0.01, (n, K))
    return x.astype(np.float32)


def timed(fn, *args, repeat: int = 3) -> float:
    fn(*args)  # warm up
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--radii", type=float, nargs="+", default=[0.05, 0.2])
    ap.add_argument("--brute-batch", type=int, default=256,
                    help="queries per brute-force timing (extrapolated to lookups/s)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None

    from rpd.labels.lookup import NearestKeyIndex, brute_force_nearest

    rows: list[dict] = []

    def row(n: int, method: str, build: float | None, rate: float,
            hit: float | None = None) -> None:
        rows.append(dict(entries=n, method=method, build_s=build, lookups_per_s=rate,
                         hit_rate=hit))
        print(f"{n:>9} {method:<40} {'' if build is None else f'{build:.2f}':>8} "
              f"{rate:>11,.0f} {'' if hit is None else f'{hit:.2f}':>8}", flush=True)

    print(f"K={K}, batch={args.batch}; radius = RMS key distance per dim")
    print(f"{'entries':>9} {'method':<40} {'build s':>8} {'lookups/s':>11} {'hit rate':>8}")
    for n in args.sizes:
        rng = np.random.default_rng(0)
        raw = synthetic_keys(n, rng)
        mean, std = raw.mean(0), raw.std(0)
        keys = (raw - mean) / std
        new = (synthetic_keys(args.batch // 2, np.random.default_rng(1)) - mean) / std

        t = time.perf_counter()
        index = NearestKeyIndex(keys)
        build = time.perf_counter() - t
        for radius in args.radii:
            max_dist = radius * math.sqrt(K)
            near = keys[rng.integers(0, n, args.batch // 2)]
            near = near + rng.normal(0, 0.2 * radius, near.shape).astype(np.float32)
            queries = np.concatenate([near, new]).astype(np.float32)
            dt = timed(index.query, queries, max_dist)
            idx, _ = index.query(queries, max_dist)
            name = f"cKDTree (PCA-rotated), radius {radius:g}"
            row(n, name, build, len(queries) / dt, float((idx >= 0).mean()))
            # Exactness on a subset (brute force is the reference).
            sub = queries[:: max(1, len(queries) // 128)]
            _, bd = brute_force_nearest(keys, sub)
            ki, kd = index.query(sub, max_dist)
            ref_hit = bd <= max_dist
            assert np.array_equal(ki >= 0, ref_hit) and np.allclose(kd[ref_hit], bd[ref_hit])

        from scipy.spatial import cKDTree

        radius = args.radii[0]
        t = time.perf_counter()
        plain = cKDTree(keys.astype(np.float64))
        build = time.perf_counter() - t
        dt = timed(plain.query, queries, 1, 0, 2, radius * math.sqrt(K))
        name = f"cKDTree (not rotated), radius {radius:g}"
        row(n, name, build, len(queries) / dt)

        t = time.perf_counter()
        index.query(queries, np.inf)
        row(n, "cKDTree, unbounded (exact nearest)", None,
            len(queries) / (time.perf_counter() - t))

        q = queries[: args.brute_batch]
        if faiss is not None:
            t = time.perf_counter()
            flat = faiss.IndexFlatL2(K)
            flat.add(keys)
            build = time.perf_counter() - t
            dt = timed(flat.search, q, 1, repeat=2)
            row(n, "faiss IndexFlatL2", build, len(q) / dt)
        else:
            print(f"{n:>9} {'faiss IndexFlatL2':<40} (faiss not installed)")

        tk = torch.from_numpy(keys)

        def cdist(qq: np.ndarray, tk: torch.Tensor = tk) -> None:
            d = torch.cdist(torch.from_numpy(qq), tk)
            d.min(dim=1)

        dt = timed(cdist, q, repeat=2)
        row(n, "torch.cdist + min", None, len(q) / dt)
    if args.out is not None:
        record.write(args.out, "bench_cache_lookup", rows, [
            ("entries", "entries", "{:,}"), ("method", "method", "{}"),
            ("build_s", "build (s)", "{:.2f}"), ("lookups_per_s", "lookups/s", "{:,.0f}"),
            ("hit_rate", "hit rate", "{:.2f}")], key_dims=K, batch=args.batch)


if __name__ == "__main__":
    main()
