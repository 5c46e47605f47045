"""What the trainer asks for teacher actions: the `LabelSource` protocol and answer kinds.

`LabelSource` is the protocol RPDPPO and `rpd train` are written against: answers without the
live teacher, live labels for the rest, write-back, the stored labels for the offline phase,
and the source's label model. The Zarr teacher-action store's `rpd.labels.lookup.TeacherCache`
(`rpd cache`) meets it; `rpd.labels.memory.InMemoryLabelSource` meets it without a store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from rpd.labels.model import LabelEnsemble

ANSWER_KINDS = ("none", "exact", "neighbour", "model")
"""What answered a state, by code (the index): "none" (a miss: the live teacher is asked,
within the live budget), "exact" (a stored key at distance 0), "neighbour" (a stored key
within the hit radius), "model" (the store's label model, `rpd.labels.model`)."""
NONE, EXACT, NEIGHBOUR, MODEL = range(len(ANSWER_KINDS))


def answer_kinds(distance: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Answer codes [B] int8 of a nearest-key lookup: EXACT at distance 0, NEIGHBOUR when
    found farther away, NONE when not found. distance [B] f64, found [B] bool."""
    return np.where(found, np.where(distance <= 0, EXACT, NEIGHBOUR), NONE).astype(np.int8)


@runtime_checkable
class LabelSource(Protocol):
    """What RPDPPO and `rpd train` need to label transitions (met by
    `rpd.labels.lookup.TeacherCache`). A source subclasses it to inherit the defaults of what
    it has nothing to do for: `entries` (no stored labels), `flush`, `close`, `model`."""

    model: LabelEnsemble | None = None
    """The label model answering states no stored key is near (its state travels in the
    checkpoint); None = none."""

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

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (obs [N, D], teacher_action [N, A]), for the offline phase; none here."""
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)

    def entries_with_states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All stored (obs [N, D], env_state [N, S], teacher_action [N, A]): the offline phase
        of a pixel student renders its frames from the states; none here."""
        empty = np.zeros((0, 0), np.float32)
        return empty, empty, empty

    def flush(self) -> None:
        """Persist what `insert` has not yet written (at each checkpoint); nothing here."""

    def close(self) -> None:
        """Release what the source holds (the live labeller's env); nothing here."""


LiveLabeller = Callable[[np.ndarray], np.ndarray]
"""env states [N, S] -> teacher actions [N, A]."""
FrameLabeller = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(images [N, H, W, 3] u8 of the teacher's view, proprio [N, P] f32 (`robot_proprio`), env
states [N, S]) -> teacher actions [N, A]: labels from frames already rendered."""
