"""The teacher cache's nearest-key lookup agrees with brute force (no envs needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rpd.data.store import SOURCES, KeySpec, Rows, StoreIdentity, TeacherStore
from rpd.errors import InputError
from rpd.labels.lookup import NearestKeyIndex, TeacherCache, brute_force_nearest


def clustered(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Trajectory-like points: random walks in a 3-D latent space mapped into k dims."""
    walk = np.cumsum(rng.normal(0, 0.05, (n, 3)), axis=0)
    return (walk @ rng.normal(size=(3, k)) + rng.normal(0, 0.01, (n, k))).astype(np.float32)


def test_brute_force_nearest_by_hand() -> None:
    keys = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    idx, dist = brute_force_nearest(keys, np.array([[2.9, 4.1], [0.2, 0.1], [1.0, 0.9]]))
    assert idx.tolist() == [1, 0, 2]
    np.testing.assert_allclose(dist, [math.hypot(0.1, 0.1), math.hypot(0.2, 0.1), 0.1])


def test_index_agrees_with_brute_force_while_growing() -> None:
    rng = np.random.default_rng(0)
    keys = clustered(3000, 12, rng)
    index = NearestKeyIndex(keys[:2000], merge_min=500)
    index.add(keys[2000:2100])  # stays in the brute-force buffer
    queries = np.concatenate([keys[rng.integers(0, 2100, 300)] + rng.normal(0, 0.02, (300, 12)),
                              rng.normal(0, 1.5, (300, 12))]).astype(np.float32)
    for max_dist in (0.05, 0.2, np.inf):
        idx, dist = index.query(queries, max_dist)
        ref_idx, ref_dist = brute_force_nearest(keys[:2100], queries)
        within = ref_dist <= max_dist
        assert np.array_equal(idx >= 0, within)
        np.testing.assert_array_equal(idx[within], ref_idx[within])
        np.testing.assert_allclose(dist[within], ref_dist[within], rtol=1e-9)
    assert 0 < (index.query(queries, 0.05)[0] >= 0).mean() < 1  # both hits and misses
    index.add(keys[2100:])  # passes the merge threshold: rebuilt tree
    assert len(index) == 3000 and index._pending_n == 0
    idx, _ = index.query(keys[2900:2950], 1e-6)
    assert idx.tolist() == list(range(2900, 2950))


def test_teacher_cache_lookup_and_insert_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    d, a, n = 6, 2, 500
    obs = clustered(n, d, rng)
    spec = KeySpec.from_data(obs, dims=[0, 1, 3, 5])
    ident = StoreIdentity("f" * 16, "PickCube-v1", "pd_ee_delta_pose", spec, d, a, 4)
    store = TeacherStore.create_or_open(tmp_path / "s", ident)
    actions = rng.normal(size=(n, a)).astype(np.float32)
    for i in range(0, n, 100):
        store.write_part(Rows(spec.keys(obs[i:i + 100]), obs[i:i + 100], actions[i:i + 100],
                              np.zeros((100, 4)), np.full(100, i), np.arange(100),
                              np.full(100, SOURCES.index("demo"))), f"u{i}")

    cache = TeacherCache(TeacherStore.open(tmp_path / "s"), radius=0.1)
    assert len(cache) == n and cache.max_dist == pytest.approx(0.1 * 2.0)
    query_obs = np.concatenate([obs[::5] + rng.normal(0, 0.01, (100, d)),
                                rng.normal(0, 3, (50, d))]).astype(np.float32)
    got, hit = cache.lookup_obs(query_obs)
    keys = spec.keys(obs)
    j, dist = brute_force_nearest(keys, spec.keys(query_obs))
    want_hit = dist / math.sqrt(spec.key_dim) <= 0.1  # RMS per key dim
    assert np.array_equal(hit, want_hit) and 0 < hit.mean() < 1
    np.testing.assert_array_equal(got[hit], actions[j[hit]])
    assert (got[~hit] == 0).all()

    # Inserts are visible at once and written through to the store; NaN rows are rejected.
    new_obs = rng.normal(0, 3, (3, d)).astype(np.float32)
    new_act = np.array([[1, 2], [np.nan, 0], [5, 6]], np.float32)
    assert cache.insert(None, new_obs, np.zeros((3, 4)), new_act) == 2
    got, hit = cache.lookup_obs(new_obs)
    assert hit.tolist() == [True, False, True] and got[2].tolist() == [5, 6]
    with pytest.raises(ValueError, match="keys differ"):
        cache.insert(np.zeros((1, 4)), new_obs[:1] + 9, np.zeros((1, 4)), new_act[:1])
    reread = TeacherStore.open(tmp_path / "s").summary()
    assert reread.by_source["live"] == 2 and reread.rejected_nonfinite == 1
    with pytest.raises(InputError, match="--cache-radius -1"):
        TeacherCache(TeacherStore.open(tmp_path / "s"), radius=-1)


def test_teacher_cache_serves_only_its_teachers_labels(tmp_path: Path) -> None:
    """Teachers A and B labelled the same states (B through --allow-mismatch): a run of A is
    served A's actions, a run of B B's, and B's live labels are recorded as B's."""
    from types import SimpleNamespace

    d, a, n = 4, 2, 50
    obs = clustered(n, d, np.random.default_rng(2))
    spec = KeySpec.fixed(d)
    ident = StoreIdentity("a" * 16, "PickCube-v1", "pd_ee_delta_pose", spec, d, a, 3)
    store = TeacherStore.create_or_open(tmp_path / "s", ident)

    def labels(unit: str, actions: np.ndarray, fingerprint: str) -> None:
        rows = Rows(spec.keys(obs), obs, actions, np.zeros((n, 3)), np.zeros(n), np.arange(n),
                    np.full(n, SOURCES.index("demo")))
        assert store.write_part(rows, unit, teacher_fingerprint=fingerprint).written == n

    labels("demo-0", np.ones((n, a)), "a" * 16)
    labels("demo-1", -np.ones((n, a)), "b" * 16)

    def teacher(fingerprint: str) -> SimpleNamespace:
        return SimpleNamespace(fingerprint=fingerprint, kind="cnn-tiny",
                               spec=SimpleNamespace(control_mode="pd_ee_delta_pose",
                                                    action_dim=a))

    cache_a = TeacherCache.open(tmp_path / "s", teacher("a" * 16), radius=1e-5)
    got, hit = cache_a.lookup_obs(obs)
    assert len(cache_a) == n and hit.all() and (got == 1).all()
    cache_b = TeacherCache.open(tmp_path / "s", teacher("b" * 16), radius=1e-5,
                                allow_mismatch=True)
    got, hit = cache_b.lookup_obs(obs)
    assert len(cache_b) == n and hit.all() and (got == -1).all()

    new_obs = obs[:3] + 100
    assert cache_b.insert(None, new_obs, np.zeros((3, 3)), np.full((3, a), -2.0)) == 3
    again_a = TeacherCache.open(tmp_path / "s", teacher("a" * 16), radius=1e-5)
    assert len(again_a) == n and not again_a.lookup_obs(new_obs)[1].any()
    again_b = TeacherCache.open(tmp_path / "s", teacher("b" * 16), radius=1e-5,
                                allow_mismatch=True)
    got, hit = again_b.lookup_obs(new_obs)
    assert len(again_b) == n + 3 and hit.all() and (got == -2).all()


def test_a_file_given_as_a_cache_is_one_line_naming_rpd_cache(tmp_path: Path) -> None:
    labels = tmp_path / "labels.npz"
    np.savez(labels, key=np.zeros((1, 2)))
    with pytest.raises(InputError, match=r"^--cache \S+labels.npz: a file; a cache is a Zarr "
                                         r"store directory built by `rpd cache`$"):
        TeacherCache.open(labels, teacher=None)
