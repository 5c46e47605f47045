"""A label source without a store: `InMemoryLabelSource` (exact or radius nearest-neighbour
lookup in numpy over the labels inserted so far)."""

from __future__ import annotations

import logging

import numpy as np

from rpd.labels.protocol import LabelSource, LiveLabeller, answer_kinds

logger = logging.getLogger(__name__)


class InMemoryLabelSource(LabelSource):
    """A teacher-action cache held in memory (no Zarr store).

    A key hits when its nearest cached key is within `radius` (Euclidean, in key units);
    radius 0 means an exact match.

    Args:
        live: The live labeller; None makes `label_live` an error (cache-only use).
        radius: Hit radius.
    """

    def __init__(self, live: LiveLabeller | None = None, radius: float = 0.0) -> None:
        self.live = live
        self.radius = float(radius)
        self._keys: list[np.ndarray] = []
        self._obs: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._flat: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

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
