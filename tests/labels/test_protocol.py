"""The label-source protocol: what a source leaves out gets the protocol's defaults."""

from __future__ import annotations

import numpy as np

from rpd.labels import InMemoryLabelSource, LabelSource, TeacherCache


class _Minimal(LabelSource):
    """A source with only what every source must answer."""

    def keys(self, obs: np.ndarray) -> np.ndarray:
        return obs

    def answer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(obs), 2), np.float32), np.zeros(len(obs), np.int8)

    def label_live(self, env_states: np.ndarray) -> np.ndarray:
        return np.zeros((len(env_states), 2), np.float32)

    def insert(self, keys: np.ndarray, obs: np.ndarray, env_states: np.ndarray,
               actions: np.ndarray) -> None:
        pass


def test_a_minimal_source_has_no_entries_no_model_and_nothing_to_flush_or_close() -> None:
    source = _Minimal()
    assert isinstance(source, LabelSource) and source.model is None
    obs, actions = source.entries()
    assert obs.shape == actions.shape == (0, 0)
    assert all(a.shape == (0, 0) for a in source.entries_with_states())
    source.flush()
    source.close()


def test_the_sources_meet_the_protocol() -> None:
    # subclasses, so they inherit the defaults (issubclass refuses a protocol with attributes)
    assert LabelSource in InMemoryLabelSource.__mro__ and LabelSource in TeacherCache.__mro__
    source = InMemoryLabelSource(radius=0.0)
    assert isinstance(source, LabelSource) and source.model is None
    source.insert(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 5)), np.full((2, 2), 0.5))
    obs, states, actions = source.entries_with_states()
    assert obs.shape == (2, 3) and states.shape == (2, 5) and (actions == 0.5).all()
    source.flush()
    source.close()
