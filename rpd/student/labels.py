"""Where the trainer gets teacher actions from: a cache first, the live teacher for misses.

`LabelSource` is the small protocol RPDPPO is written against. The Zarr teacher-action store's
`rpd.pipeline.lookup.TeacherCache` (`rpd cache`) meets it; `InMemoryLabelSource` meets it
without a store (exact or radius nearest-neighbour lookup in numpy, persisted as .npz).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

ANSWER_KINDS = ("none", "exact", "neighbour", "model")
"""What answered a state, by code (the index): "none" (a miss: the live teacher is asked,
within the live budget), "exact" (a stored key at distance 0), "neighbour" (a stored key
within the hit radius), "model" (the store's label model, `rpd.pipeline.label_model`)."""
NONE, EXACT, NEIGHBOUR, MODEL = range(len(ANSWER_KINDS))


def answer_kinds(distance: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Answer codes [B] int8 of a nearest-key lookup: EXACT at distance 0, NEIGHBOUR when
    found farther away, NONE when not found. distance [B] f64, found [B] bool."""
    return np.where(found, np.where(distance <= 0, EXACT, NEIGHBOUR), NONE).astype(np.int8)


@runtime_checkable
class LabelSource(Protocol):
    """What RPDPPO needs to label transitions (met by rpd.pipeline.lookup.TeacherCache)."""

    def keys(self, obs: np.ndarray) -> np.ndarray:
        """Lookup keys [B, K] of student state observations [B, D]."""
        ...

    def answer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels for state observations [B, D] without the live teacher: (actions [B, A] f32,
        kind [B] int8, an `ANSWER_KINDS` code). Rows of kind NONE are undefined."""
        ...

    def label_live(self, env_states: np.ndarray) -> np.ndarray:
        """Ask the live teacher about env states [N, S]: actions [N, A] f32 (one batch)."""
        ...

    def insert(self, keys: np.ndarray, obs: np.ndarray, env_states: np.ndarray,
               actions: np.ndarray) -> None:
        """Write new labels back: keys [N, K], obs [N, D], env_states [N, S], actions [N, A]."""
        ...


LiveLabeller = Callable[[np.ndarray], np.ndarray]
"""env states [N, S] -> teacher actions [N, A]."""
FrameLabeller = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(images [N, H, W, 3] u8 of the teacher's view, proprio [N, P] f32 (`robot_proprio`), env
states [N, S]) -> teacher actions [N, A]: labels from frames already rendered."""


class InMemoryLabelSource:
    """A teacher-action cache held in memory (no Zarr store), optionally saved as .npz.

    A key hits when its nearest cached key is within `radius` (Euclidean, in key units);
    radius 0 means an exact match.

    Args:
        live: The live labeller; None makes `label_live` an error (cache-only use).
        radius: Hit radius.
        path: Where `flush` saves the cache (.npz); loaded from if it exists.
        on_close: Called by `close` (e.g. to close the live labeller's env).
    """

    def __init__(self, live: LiveLabeller | None = None, radius: float = 0.0,
                 path: str | Path | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.live = live
        self._on_close = on_close
        self.radius = float(radius)
        self.path = Path(path) if path is not None else None
        self._keys: list[np.ndarray] = []
        self._obs: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._dirty = False
        self._flat: tuple[np.ndarray, np.ndarray] | None = None
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

    def _load(self, path: Path) -> None:
        from rpd.errors import InputError

        try:
            with np.load(path) as data:
                arrays = [data[n] for n in ("key", "obs", "env_state", "teacher_action")]
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"--cache {path}: not a label file written by rpd train ({e}); "
                             "pass the labels.npz of a run or a `rpd cache` store") from None
        self._keys, self._obs, self._states, self._actions = ([a] for a in arrays)
        logger.info("loaded %d cached labels from %s", len(self), path)

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:
            self._flat = (np.concatenate(self._keys), np.concatenate(self._actions))
        return self._flat

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """All cached (obs [N, D], teacher_action [N, A]), for the offline phase."""
        if not self._obs:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(self._obs), np.concatenate(self._actions)

    def entries_with_states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All cached (obs [N, D], env_state [N, S], teacher_action [N, A]): the offline phase
        of a pixel student renders its frames from the states."""
        obs, actions = self.entries()
        states = (np.concatenate(self._states) if self._states
                  else np.zeros((0, 0), np.float32))
        return obs, states, actions

    def keys(self, obs: np.ndarray) -> np.ndarray:
        """The key of a state observation is the observation itself: [B, D] f32."""
        return np.asarray(obs, np.float32)

    def answer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See `LabelSource.answer`: the nearest cached key within the radius."""
        actions, distance = self.lookup(self.keys(obs))
        return actions, answer_kinds(distance, distance <= self.radius)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Action of the nearest cached key [B, A] f32 and its distance [B] f64 (inf when the
        cache is empty). Brute force, in chunks of 1024 queries."""
        keys = np.asarray(keys, np.float32)
        if not self._keys:
            return np.zeros((len(keys), 0), np.float32), np.full(len(keys), np.inf)
        cached, actions = self._all()
        out = np.zeros((len(keys), actions.shape[1]), np.float32)
        dist = np.full(len(keys), np.inf)
        sq_cached = (cached.astype(np.float64) ** 2).sum(1)
        for i in range(0, len(keys), 1024):
            q = keys[i:i + 1024].astype(np.float64)
            d2 = (q ** 2).sum(1)[:, None] - 2.0 * q @ cached.T.astype(np.float64) + sq_cached
            j = d2.argmin(1)
            dist[i:i + 1024] = np.sqrt(((cached[j] - keys[i:i + 1024]) ** 2).sum(1))
            out[i:i + 1024] = actions[j]
        return out, dist

    def label_live(self, env_states: np.ndarray) -> np.ndarray:
        """See `LabelSource.label_live`."""
        if self.live is None:
            raise RuntimeError("this label source has no live teacher")
        return self.live(env_states)

    def insert(self, keys: np.ndarray, obs: np.ndarray, env_states: np.ndarray,
               actions: np.ndarray) -> None:
        """See `LabelSource.insert`. NaN/inf actions are dropped (and logged)."""
        ok = np.isfinite(actions).all(1)
        if not ok.all():
            logger.warning("dropping %d non-finite teacher actions", int((~ok).sum()))
        if not ok.any():
            return
        self._keys.append(np.asarray(keys, np.float32)[ok])
        self._obs.append(np.asarray(obs, np.float32)[ok])
        self._states.append(np.asarray(env_states, np.float32)[ok])
        self._actions.append(np.asarray(actions, np.float32)[ok])
        self._flat = None
        self._dirty = True

    def flush(self) -> None:
        """Save to `path` (atomically) if anything changed."""
        if self.path is None or not self._dirty or not self._keys:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp.npz")
        np.savez(tmp, key=np.concatenate(self._keys), obs=np.concatenate(self._obs),
                 env_state=np.concatenate(self._states),
                 teacher_action=np.concatenate(self._actions))
        tmp.replace(self.path)
        self._dirty = False

    def close(self) -> None:
        """Save (see `flush`) and release the live labeller."""
        self.flush()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
