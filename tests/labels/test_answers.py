"""Labels answered without the live teacher (issue 19): the label model and answers by kind,
on a real Zarr store, real ManiSkill envs and a real teacher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from proprio_teacher import ENV_ID, expected_label, make_teacher

from rpd.data.store import KeySpec
from rpd.data.vec_envs import EnvConfig, make_vec_env
from rpd.labels.lookup import TeacherCache
from rpd.labels.model import EnsembleConfig, LabelEnsemble
from rpd.labels.protocol import EXACT, MODEL, NEIGHBOUR, NONE, answer_kinds
from rpd.student.rpdppo import RPDPPO

N_ENVS, N_STEPS = 2, 32
SMALL = dict(members=4, hidden=64, steps=400, batch_size=64, min_rows=32)


def test_answer_kinds_from_distances() -> None:
    kind = answer_kinds(np.array([0.0, 0.2, np.inf, 0.1]), np.array([True, True, False, False]))
    assert kind.tolist() == [EXACT, NEIGHBOUR, NONE, NONE]


def test_the_ensemble_answers_where_it_knows_and_abstains_far_away() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3)).astype(np.float32) / 3
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    model = LabelEnsemble(EnsembleConfig(**{**SMALL, "steps": 1500, "max_spread": 0.05}))
    assert not model.ready and not model.answer(x[:5])[1].any()  # unfitted: abstains
    model.fit(x, np.tanh(x @ w))
    near = rng.normal(size=(500, 6)).astype(np.float32)
    mean, sure = model.answer(near)
    assert sure.mean() > 0.8
    error = ((mean[sure] - np.tanh(near @ w)[sure]) ** 2).sum(1).mean()
    assert error < 0.05 * np.tanh(near @ w).var(0).sum()
    _, far_sure = model.answer(near * 30)  # far outside the data: the members disagree
    assert far_sure.mean() < 0.1


def test_too_few_labels_leave_the_model_unfitted() -> None:
    model = LabelEnsemble(EnsembleConfig(**SMALL))
    assert np.isnan(model.fit(np.zeros((10, 4)), np.zeros((10, 2))))
    assert not model.ready


@pytest.fixture(scope="module")
def venv() -> Iterator[Any]:
    env = make_vec_env(EnvConfig(ENV_ID), N_ENVS, seed=0, with_env_state=True)
    yield env
    env.close()


def _store(tmp: Path) -> TeacherCache:
    teacher = make_teacher()
    return TeacherCache.open(tmp / "store", teacher, env_id=ENV_ID, radius=1e-5, create=True,
                             key_spec=KeySpec.fixed(35))


def _learn(venv: Any, cache: TeacherCache, seed: int, **kw: Any) -> RPDPPO:
    model = RPDPPO("MlpPolicy", venv, label_source=cache, n_steps=N_STEPS, batch_size=32,
                   n_epochs=1, seed=seed, device="cpu",
                   policy_kwargs=dict(net_arch=dict(pi=[32], vf=[32])), **kw)
    model.learn(N_ENVS * N_STEPS)
    return model


@pytest.fixture(scope="module")
def filled(venv: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the live labels of two short runs."""
    tmp = tmp_path_factory.mktemp("answers")
    cache = _store(tmp)
    for seed in (1, 2):
        _learn(venv, cache, seed)
    cache.close()
    return tmp


def _reopen(filled: Path, tmp: Path, spread: float) -> TeacherCache:
    import shutil

    shutil.copytree(filled / "store", tmp / "store")
    cache = TeacherCache.open(tmp / "store", make_teacher(), env_id=ENV_ID, radius=1e-5)
    cache.model = LabelEnsemble(EnsembleConfig(**{**SMALL, "max_spread": spread}))
    return cache


@pytest.mark.slow
def test_model_answers_are_counted_and_never_stored(venv: Any, filled: Path,
                                                    tmp_path: Path) -> None:
    cache = _reopen(filled, tmp_path, spread=np.inf)  # the model answers every miss
    before = len(cache.store.read(["teacher_action"]))
    model = _learn(venv, cache, seed=3, answer_audit=8)
    total = N_ENVS * N_STEPS
    assert model.live_teacher_calls == 0 and model.answers.get("neighbour", 0) == 0
    assert model.answers["model"] + model.answers.get("exact", 0) == total
    assert model.answers["model"] > 0
    # nothing but live labels enters the store: the audit's labels are not written either
    assert len(cache.store.read(["teacher_action"])) == before == len(cache)
    # the audit asked the live teacher about 8 answered states; they train on its labels
    assert model.audit_calls == 8 and model.answer_error["model"][1] > 0
    buf = model.rollout_buffer
    obs = buf.observations.reshape(total, -1)
    labels = buf.teacher_action.reshape(total, -1)
    live = np.isclose(labels, expected_label(obs), atol=1e-4).all(1)
    assert live.sum() >= 8 and buf.label_mask.all()
    cache.close()


def test_an_abstaining_model_falls_through_to_the_live_teacher(venv: Any, filled: Path,
                                                               tmp_path: Path) -> None:
    cache = _reopen(filled, tmp_path, spread=0.0)  # never sure enough
    before = len(cache)
    model = _learn(venv, cache, seed=3)
    total = N_ENVS * N_STEPS
    assert model.answers.get("model", 0) == 0 and cache.model is not None and cache.model.ready
    assert model.live_teacher_calls == total - model.answers.get("exact", 0) > 0
    assert len(cache) == before + model.live_teacher_calls  # live labels are written back
    obs = model.rollout_buffer.observations.reshape(total, -1)
    np.testing.assert_allclose(model.rollout_buffer.teacher_action.reshape(total, -1),
                               expected_label(obs), atol=1e-4)
    cache.close()


def test_exact_hits_come_before_the_model(filled: Path, tmp_path: Path) -> None:
    cache = _reopen(filled, tmp_path, spread=np.inf)
    obs, actions = cache.entries()
    got, kind = cache.answer(np.concatenate([obs[:5], obs[:5] + 0.5]))
    assert (kind[:5] == EXACT).all() and (kind[5:] == MODEL).all()
    np.testing.assert_allclose(got[:5], actions[:5])
    cache.close()
