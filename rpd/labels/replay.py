"""The label replay: teacher-labelled transitions of earlier rollouts, kept for the distill
term (`LabelReplay`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


class LabelReplay:
    """The labelled transitions of earlier rollouts (observations and teacher actions), the
    latest `capacity` of them in a ring, so the distill term keeps revisiting them.

    PPO's update sees only the current rollout; a student that cannot yet tell states apart
    (a CNN on a few hundred frames) fits each rollout's labels in turn and swings between them.
    Sampling labels of earlier rollouts beside the current ones makes the distill
    term a fit to all recent labels (as DAgger aggregates its data).

    Args:
        capacity: Transitions kept (the oldest are overwritten).
        seed: Sampling seed.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity {capacity}: must be positive")
        self.capacity = capacity
        self.obs: dict[str, np.ndarray] | np.ndarray | None = None
        self.actions: np.ndarray | None = None
        self.size = 0
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: dict[str, np.ndarray] | np.ndarray, actions: np.ndarray) -> None:
        """Keep transitions: obs [N, ...] (by key for a pixel student), actions [N, A]."""
        n = len(actions)
        if n == 0:
            return
        if n > self.capacity:  # only the latest fit
            obs = _rows(obs, slice(n - self.capacity, n))
            actions, n = actions[-self.capacity:], self.capacity
        if self.actions is None:
            def empty(a: np.ndarray) -> np.ndarray:
                return np.zeros((self.capacity, *a.shape[1:]), a.dtype)

            self.obs = ({k: empty(v) for k, v in obs.items()} if isinstance(obs, dict)
                        else empty(obs))
            self.actions = empty(actions)
        at = (self.pos + np.arange(n)) % self.capacity
        if isinstance(obs, dict):
            for k, v in obs.items():
                self.obs[k][at] = v  # type: ignore[index]
        else:
            self.obs[at] = obs  # type: ignore[index]
        self.actions[at] = actions
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray]:
        """n transitions drawn uniformly (with replacement): (obs, teacher actions)."""
        assert self.actions is not None and self.obs is not None, "the replay is empty"
        idx = self.rng.integers(0, self.size, n)
        return _rows(self.obs, idx), self.actions[idx]

    def save(self, path: Path, step: int) -> None:
        """Write the replay (uncompressed .npz, atomically) tagged with the training step it
        belongs to, so a resumed run continues with the labels it had (`load`)."""
        assert self.actions is not None and self.obs is not None, "the replay is empty"
        obs = ({f"obs.{k}": v for k, v in self.obs.items()} if isinstance(self.obs, dict)
               else {"obs": self.obs})
        meta = dict(step=int(step), capacity=self.capacity, size=self.size, pos=self.pos,
                    rng=self.rng.bit_generator.state)
        arrays = dict(actions=self.actions, meta=np.array(json.dumps(meta)), **obs)
        tmp = path.with_name(f".{path.name}.tmp")
        try:  # np.savez's own zip stays open when a write fails (a full disk)
            with open(tmp, "wb") as f, zipfile.ZipFile(f, "w") as z:
                for name, a in arrays.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, step: int, capacity: int) -> LabelReplay | None:
        """The replay `save` wrote at `step` with `capacity`; None when the file belongs to
        another step (a run killed between the two writes) or capacity."""
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta["step"] != step or meta["capacity"] != capacity:
                return None
            replay = cls(capacity)
            replay.actions = z["actions"]
            replay.obs = z["obs"] if "obs" in z.files else {
                k.removeprefix("obs."): z[k] for k in z.files if k.startswith("obs.")}
        replay.size, replay.pos = int(meta["size"]), int(meta["pos"])
        replay.rng.bit_generator.state = meta["rng"]
        return replay


def _rows(obs: dict[str, np.ndarray] | np.ndarray, idx: Any) -> dict[str, np.ndarray] | np.ndarray:
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]
