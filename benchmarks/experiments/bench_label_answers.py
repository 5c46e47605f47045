"""Measured which lookup answers a new run's states from a store, and how well (offline).

Takes two stores of the same teacher and task, e.g. the RUN/cache of two RPD runs with
different seeds: the first is the store, a sample of the second's live labels are the
queries (states a new run visits, with the teacher's true label). For each candidate it
prints the share of queries answered and the squared error of the answers (summed over
action dims; the labels' total variance is printed for scale):

- nearest key within a radius, on the raw observation (the key of a run's own store), on
  the observation standardised by the store's statistics, and on that without the joint
  velocities (dims 9-17 of a Panda task's state: the dims a scripted teacher ignores);
- the 8 nearest standardised keys within a radius, their actions weighted by 1 / distance;
- the label model (`rpd.labels.model.LabelEnsemble`) at several agreement bounds.

    python benchmarks/experiments/bench_label_answers.py STORE QUERIES [--sample 10000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from rpd.data.store import TeacherStore, read_root_attrs

    rows = TeacherStore(path, read_root_attrs(path, "store")).read(["obs", "teacher_action"])
    return rows.obs.astype(np.float32), rows.teacher_action.astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("queries", type=Path)
    p.add_argument("--sample", type=int, default=10_000)
    p.add_argument("--spreads", type=float, nargs="+", default=[0.02, 0.03, 0.05, 0.08, 0.1])
    a = p.parse_args()

    from rpd.data.devices import limit_cpu_threads
    from rpd.labels.lookup import NearestKeyIndex
    from rpd.labels.model import LabelEnsemble

    limit_cpu_threads()
    obs, action = load(a.store)
    q_obs, q_action = load(a.queries)
    pick = np.random.default_rng(0).choice(len(q_obs), min(a.sample, len(q_obs)), replace=False)
    q_obs, q_action = q_obs[pick], q_action[pick]
    rows: list[tuple[str, float, float]] = []

    def add(name: str, answer: np.ndarray, answered: np.ndarray) -> None:
        error = ((answer - q_action) ** 2).sum(1)
        rows.append((name, float(answered.mean()),
                     float(error[answered].mean()) if answered.any() else float("nan")))

    mean, std = obs.mean(0), np.maximum(obs.std(0), 1e-2)
    no_qvel = [i for i in range(obs.shape[1]) if not 9 <= i < 18]
    keys = {"raw": lambda o: o, "standardised": lambda o: (o - mean) / std,
            "standardised, no joint velocities": lambda o: ((o - mean) / std)[:, no_qvel]}
    for name, key in keys.items():
        index = NearestKeyIndex(key(obs))
        k = key(q_obs)
        for radius in (0.05, 0.1, 0.2, 0.3):
            j, _ = index.query(k, radius * np.sqrt(k.shape[1]))
            found = j >= 0
            answer = np.zeros_like(q_action)
            answer[found] = action[j[found]]
            add(f"nearest key ({name}), radius {radius}", answer, found)
    from scipy.spatial import cKDTree

    tree, k = cKDTree(keys["standardised"](obs)), keys["standardised"](q_obs)
    for radius in (0.1, 0.2, 0.3):
        d, j = tree.query(k, k=8, distance_upper_bound=radius * np.sqrt(k.shape[1]))
        ok = np.isfinite(d)
        w = np.where(ok, 1.0 / np.maximum(d, 1e-6), 0.0)
        found = ok.any(1)
        answer = np.zeros_like(q_action)
        jj = np.where(ok, j, 0)
        answer[found] = (np.einsum("bk,bka->ba", w, action[jj])[found]
                         / w[found].sum(1, keepdims=True))
        add(f"8 nearest keys (standardised), distance-weighted, radius {radius}", answer, found)
    t0 = time.perf_counter()
    model = LabelEnsemble()
    model.fit(obs, action)
    fit_s = time.perf_counter() - t0
    answer, spread = model.predict(q_obs)
    add("label model, every state", answer, np.ones(len(q_obs), bool))
    for bound in a.spreads:
        add(f"label model, spread ≤ {bound}", answer, spread <= bound)

    print(f"\nstore {a.store} ({len(obs)} labels), {len(q_obs)} queries from {a.queries}; "
          f"label variance (sum over dims) {q_action.var(0).sum():.3f}; "
          f"label model fitted in {fit_s:.0f} s\n")
    print("| lookup | answered | squared error of the answers |")
    print("| --- | --- | --- |")
    for name, share, error in rows:
        print(f"| {name} | {share:.1%} | {error:.4f} |")


if __name__ == "__main__":
    main()
