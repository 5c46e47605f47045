"""The teacher-action lookup the student trainer uses: `TeacherCache` over a `rpd cache` store.

`TeacherCache.lookup(keys)` returns the cached action of the nearest key when it is within
`radius` (RMS distance per key dim, in units of the key scale). Exact search with a SciPy
cKDTree over the keys rotated into their principal axes, queried with
`distance_upper_bound=radius`, which prunes almost everything for both hits and misses;
measured against faiss IndexFlatL2 and torch.cdist in benchmarks/bench_cache_lookup.py
(README). New entries go to a small brute-force buffer that is merged into the tree when it
grows past 10 % of it, so the index stays current. Live labels (cache misses) are asked of the
teacher through a `TeacherLabeler` and written back to the store as parts of their own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.store import KeySpec, Rows, StoreIdentity, TeacherStore, source_code
from rpd.errors import InputError
from rpd.labels.model import LabelEnsemble
from rpd.labels.protocol import MODEL, LabelSource, answer_kinds

logger = logging.getLogger(__name__)

DEFAULT_RADIUS = 0.05
"""Default hit radius (RMS key distance, in key-scale units per dim); see the README table."""


def brute_force_nearest(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest key by full search (the reference for the index).

    Args:
        keys: [N, K] cached keys (N > 0). queries: [B, K].

    Returns:
        (index [B] int64, Euclidean distance [B] float64).
    """
    keys64, q64 = np.asarray(keys, np.float64), np.asarray(queries, np.float64)
    sq_keys = (keys64 ** 2).sum(1)
    idx = np.empty(len(q64), np.int64)
    step = max(1, 4_000_000 // max(1, len(keys64)))  # bounds the [step, N] distance matrix
    for i in range(0, len(q64), step):
        d2 = sq_keys[None] - 2.0 * q64[i:i + step] @ keys64.T  # + |q|^2, equal for every key
        idx[i:i + step] = d2.argmin(1)
    dist = np.sqrt(((keys64[idx] - q64) ** 2).sum(1))
    return idx, dist


class NearestKeyIndex:
    """Exact nearest-neighbour search over keys that grow: a cKDTree plus a brute-force buffer.

    The keys are rotated into their principal axes first (an orthogonal map, so distances do
    not change): the tree's axis-aligned splits then follow the directions the data actually
    varies in, which made misses ~10x faster on trajectory-like keys
    (benchmarks/bench_cache_lookup.py). New keys wait in a buffer searched by brute force and
    are merged into the tree when the buffer passes 10 % of it.

    Args:
        keys: [N, K] initial keys.
        merge_min: The buffer is merged no earlier than at this many keys.
    """

    def __init__(self, keys: np.ndarray, merge_min: int = 4096) -> None:
        keys = np.asarray(keys, np.float64)
        self.merge_min = int(merge_min)
        self.dim = keys.shape[1]
        self._center = keys.mean(0) if len(keys) else np.zeros(self.dim)
        self._rotation = _principal_axes(keys - self._center)
        self._tree = self._build(self._rotate(keys))
        self._pending: list[np.ndarray] = []  # rotated
        self._pending_n = 0

    def _rotate(self, keys: np.ndarray) -> np.ndarray:
        return (np.asarray(keys, np.float64) - self._center) @ self._rotation

    @staticmethod
    def _build(rotated: np.ndarray) -> Any:
        from scipy.spatial import cKDTree

        return cKDTree(rotated) if len(rotated) else None

    @property
    def _main_n(self) -> int:
        return 0 if self._tree is None else int(self._tree.n)

    def __len__(self) -> int:
        return self._main_n + self._pending_n

    def add(self, keys: np.ndarray) -> None:
        """Append keys [M, K]; their indices continue from len(self)."""
        if not len(keys):
            return
        self._pending.append(self._rotate(keys))
        self._pending_n += len(keys)
        if self._pending_n > max(self.merge_min, self._main_n // 10):
            parts = ([] if self._tree is None else [self._tree.data]) + self._pending
            self._pending, self._pending_n = [], 0
            self._tree = self._build(np.concatenate(parts))

    def query(self, queries: np.ndarray, max_dist: float = np.inf
              ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest key of each query, if within `max_dist` (Euclidean, key units).

        Args:
            queries: [B, K].
            max_dist: Upper bound; farther neighbours are reported as not found.

        Returns:
            (index [B] int64, -1 when none within max_dist; distance [B] float64, inf then).
        """
        q = self._rotate(np.asarray(queries).reshape(-1, self.dim))
        idx = np.full(len(q), -1, np.int64)
        dist = np.full(len(q), np.inf)
        if self._tree is not None and len(q):
            bound = max_dist * (1 + 1e-9) if np.isfinite(max_dist) else np.inf
            d, j = self._tree.query(q, k=1, distance_upper_bound=bound)
            ok = np.isfinite(d) & (d <= max_dist)
            idx[ok], dist[ok] = j[ok], d[ok]
        if self._pending_n and len(q):
            j, d = brute_force_nearest(np.concatenate(self._pending), q)
            better = (d < dist) & (d <= max_dist)
            idx[better], dist[better] = j[better] + self._main_n, d[better]
        return idx, dist


def _principal_axes(centered: np.ndarray) -> np.ndarray:
    """[K, K] orthogonal matrix whose columns are the principal axes (identity if too few)."""
    k = centered.shape[1]
    if len(centered) < 2 * k:
        return np.eye(k)
    sample = centered[:: max(1, len(centered) // 100_000)]
    _, vecs = np.linalg.eigh(sample.T @ sample)
    return vecs[:, ::-1].copy()


class TeacherCache(LabelSource):
    """Teacher labels served from a store, for the trainer (a `rpd.labels.protocol.LabelSource`).

    `lookup` answers from the store; `label_live` asks the teacher (env kept open); `insert`
    writes new labels through to the store (one part per call) and into the index.

    Use `TeacherCache.open`.
    """

    sim_backend: str = "auto"
    """Simulator backend of the live labeller's env (`EnvConfig.sim_backend`)."""

    def __init__(self, store: TeacherStore, radius: float = DEFAULT_RADIUS,
                 teacher: Any = None, model: LabelEnsemble | None = None) -> None:
        if not (radius >= 0 and math.isfinite(radius)):
            raise InputError(f"--cache-radius {radius}: must be 0 or a positive number")
        self.store = store
        self.radius = float(radius)
        self.teacher = teacher
        self.key_spec = store.identity.key_spec
        rows = store.read(["key", "obs", "teacher_action"])
        self._obs = [rows.obs]
        self._actions = [rows.teacher_action]
        self._actions_flat: np.ndarray | None = rows.teacher_action
        self._index = NearestKeyIndex(rows.key)
        self._labeler: Any = None
        self._episode = 0
        self.model = model
        """Answers the states the index does not (see `answer`); None = nearest keys only."""
        logger.info("teacher cache %s: %d entries, radius %g", store.path, len(rows),
                    self.radius)

    @classmethod
    def open(cls, store: str | Path, teacher: Any, *, env_id: str | None = None,
             radius: float = DEFAULT_RADIUS, create: bool = False,
             key_spec: KeySpec | None = None,
             allow_mismatch: bool | None = None) -> TeacherCache:
        """Open the store for `teacher` (refusing one made for another teacher/env/key spec).

        Args:
            store: Store directory.
            teacher: The teacher whose labels are wanted (also used by `label_live`).
            env_id: The task; None accepts the store's.
            radius: Hit radius (RMS key distance per dim, in key-scale units).
            create: Create the store if missing (needs env_id and key_spec).
            key_spec: The key spec the caller computes keys with; None accepts the store's.
            allow_mismatch: Use a mismatched store anyway (logged as a warning; only the
                labels of `teacher` are served, and its live labels are recorded as its own);
                None = the caller offers no such option (`rpd train`): the error says what to
                do instead.
        """
        from rpd.data.store import read_root_attrs

        path = Path(store)
        if path.is_file():  # e.g. a labels .npz: only Zarr stores are label caches
            raise InputError(f"--cache {path}: a file; a cache is a Zarr store directory "
                             "built by `rpd cache`")
        if not (path / "zarr.json").is_file() and create:
            if env_id is None or key_spec is None:
                raise InputError(f"--cache {path}: creating a store needs env_id and key_spec")
            obs_dim, state_dim = _env_dims(teacher, env_id)
            identity = StoreIdentity(teacher.fingerprint, env_id, teacher.spec.control_mode,
                                     key_spec, obs_dim, teacher.spec.action_dim, state_dim,
                                     teacher.kind)
            return cls(TeacherStore.create_or_open(path, identity, option="--cache"), radius,
                       teacher)
        attrs = read_root_attrs(path, "--cache")
        have = TeacherStore(path, attrs).identity
        expect = StoreIdentity(teacher.fingerprint, env_id or have.env_id,
                               teacher.spec.control_mode, key_spec or have.key_spec,
                               have.obs_dim, teacher.spec.action_dim, have.state_dim,
                               teacher.kind)
        fix = ("pass --allow-mismatch to use it anyway" if allow_mismatch is not None
               else "build one for this teacher with `rpd cache` (or train without --cache)")
        return cls(TeacherStore.open(path, expect, allow_mismatch=bool(allow_mismatch),
                                     option="--cache", mismatch_fix=fix), radius, teacher)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def max_dist(self) -> float:
        """The radius as a Euclidean bound in key units: radius * sqrt(K)."""
        return self.radius * math.sqrt(self.key_spec.key_dim)

    def keys(self, obs: np.ndarray) -> np.ndarray:
        """Keys [B, K] of student state observations [B, D] (the store's key spec)."""
        return self.key_spec.keys(obs)

    def _all_actions(self) -> np.ndarray:
        if self._actions_flat is None:
            self._actions_flat = np.concatenate(self._actions)
            self._actions = [self._actions_flat]
        return self._actions_flat

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cached teacher actions for keys.

        Args:
            keys: [B, K] (from `keys(obs)`).

        Returns:
            (actions [B, A] f32, zeros where missed; hit [B] bool: nearest cached key within
            the radius).
        """
        out, idx, _ = self._nearest(keys)
        return out, idx >= 0

    def _nearest(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions [B, A] f32, zeros where none; index [B], -1 where no stored key is within
        the radius; distance [B]) of the nearest stored keys."""
        keys = np.asarray(keys, np.float32)
        if keys.ndim != 2 or keys.shape[1] != self.key_spec.key_dim:
            raise ValueError(f"keys must be [B, {self.key_spec.key_dim}], got {keys.shape}")
        idx, dist = self._index.query(keys, self.max_dist)
        out = np.zeros((len(keys), self.store.identity.action_dim), np.float32)
        found = idx >= 0
        if found.any():
            out[found] = self._all_actions()[idx[found]]
        return out, idx, dist

    def lookup_obs(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`lookup(keys(obs))`."""
        return self.lookup(self.keys(obs))

    def answer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels without the live teacher (meets `LabelSource.answer`): the nearest stored
        key within the radius (EXACT at distance 0, else NEIGHBOUR), then, for the rest, the
        label model where its members agree (MODEL). The model is (re)fitted to every stored
        label first when the store has grown by half since its last fit.

        Args:
            obs: [B, D] student state observations.

        Returns:
            (actions [B, A] f32, kind [B] int8 `ANSWER_KINDS` codes; NONE rows are zeros).
        """
        out, idx, dist = self._nearest(self.keys(obs))
        kind = answer_kinds(dist, idx >= 0)
        rest = np.flatnonzero(idx < 0)
        if self.model is not None and len(rest):
            self._refit_model()
            if self.model.ready:
                mean, sure = self.model.answer(np.asarray(obs, np.float32)[rest])
                out[rest[sure]] = mean[sure]
                kind[rest[sure]] = MODEL
        return out, kind

    def _refit_model(self) -> None:
        assert self.model is not None
        n = len(self)
        if n >= max(self.model.cfg.min_rows, 1.5 * self.model.fitted_rows) and \
                n > self.model.fitted_rows:
            obs, actions = self.entries()
            mse = self.model.fit(obs, actions)
            logger.info("label model fitted to %d stored labels (training MSE %.4f)", n, mse)

    def label_live(self, env_states: np.ndarray) -> np.ndarray:
        """Ask the live teacher about env states [N, S]: actions [N, A] f32."""
        return self.label_live_with_obs(env_states)[0]

    def label_live_with_obs(self, env_states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Live labels and the student observations of the states: ([N, A], [N, D])."""
        if self.teacher is None:
            raise RuntimeError("this cache was opened without a teacher")
        if self._labeler is None:
            from rpd.labels.live import TeacherLabeler

            self._labeler = TeacherLabeler(self.teacher, self.store.identity.env_id,
                                           sim_backend=self.sim_backend)
        return self._labeler.label_with_obs(env_states)

    def insert(self, keys: np.ndarray | None, obs: np.ndarray, env_states: np.ndarray,
               actions: np.ndarray, *, source: str = "live", episode: np.ndarray | None = None,
               step: np.ndarray | None = None) -> int:
        """Write new labels through to the store (one part) and add them to the index.

        NaN/inf actions are rejected (counted in the part). Keys must be those of `obs` under
        this store's key spec (None computes them).

        Args:
            keys: [N, K] or None. obs: [N, D]. env_states: [N, S]. actions: [N, A].
            source: One of SOURCES. episode, step: [N] (default -1 / 0..N-1).

        Returns:
            Rows added.
        """
        obs = np.asarray(obs, np.float32)
        want = self.keys(obs)
        if keys is not None and not np.allclose(np.asarray(keys, np.float32), want, atol=1e-4):
            raise ValueError("insert: keys differ from keys(obs) under the store's key spec")
        n = len(obs)
        if n == 0:
            return 0
        rows = Rows(key=want, obs=obs, teacher_action=actions, env_state=env_states,
                    episode=np.full(n, -1) if episode is None else episode,
                    step=np.arange(n) if step is None else step,
                    source=np.full(n, source_code(source)))
        res = self.store.write_part(rows)
        finite = np.isfinite(rows.teacher_action).all(1)
        self._index.add(rows.key[finite])
        self._obs.append(rows.obs[finite])
        self._actions.append(rows.teacher_action[finite])
        self._actions_flat = None
        return res.written

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """All cached (obs [N, D], teacher_action [N, A])."""
        return np.concatenate(self._obs), self._all_actions()

    def entries_with_states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The store's (obs [N, D], env_state [N, S], teacher_action [N, A]), read together (the
        states are not kept in memory: only a pixel student's offline phase needs them)."""
        rows = self.store.read(["obs", "env_state", "teacher_action"])
        return rows.obs, rows.env_state, rows.teacher_action

    def close(self) -> None:
        if self._labeler is not None:
            self._labeler.close()
            self._labeler = None


def _env_dims(teacher: Any, env_id: str) -> tuple[int, int]:
    from rpd.data.env_state import get_env_state
    from rpd.data.vec_envs import EnvConfig, make_env

    env = make_env(EnvConfig(env_id, control_mode=teacher.spec.control_mode))
    try:
        obs, _ = env.reset(seed=0)
        return int(obs.shape[-1]), int(get_env_state(env).shape[-1])
    finally:
        env.close()



__all__ = ["DEFAULT_RADIUS", "NearestKeyIndex", "TeacherCache", "brute_force_nearest"]
