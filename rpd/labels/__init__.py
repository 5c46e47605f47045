"""Everything that answers "what would the teacher do in this state": the label-source protocol
(protocol.py), the store lookup (lookup.py), the in-memory source (memory.py), the label model
(model.py), the live labeller (live.py) and the label replay (replay.py)."""

from rpd.labels.live import TeacherLabeler, flat_states, label_env_states, restore_batches
from rpd.labels.lookup import DEFAULT_RADIUS, NearestKeyIndex, TeacherCache, brute_force_nearest
from rpd.labels.memory import InMemoryLabelSource
from rpd.labels.model import EnsembleConfig, LabelEnsemble
from rpd.labels.protocol import (
    ANSWER_KINDS,
    EXACT,
    MODEL,
    NEIGHBOUR,
    NONE,
    FrameLabeller,
    LabelSource,
    LiveLabeller,
    answer_kinds,
)
from rpd.labels.replay import LabelReplay

__all__ = [
    "ANSWER_KINDS",
    "DEFAULT_RADIUS",
    "EXACT",
    "MODEL",
    "NEIGHBOUR",
    "NONE",
    "EnsembleConfig",
    "FrameLabeller",
    "InMemoryLabelSource",
    "LabelEnsemble",
    "LabelReplay",
    "LabelSource",
    "LiveLabeller",
    "NearestKeyIndex",
    "TeacherCache",
    "TeacherLabeler",
    "answer_kinds",
    "brute_force_nearest",
    "flat_states",
    "label_env_states",
    "restore_batches",
]
