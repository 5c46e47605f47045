"""RPDPPO on real ManiSkill envs: the distill gradient, label alignment, λ = 0, budgets, offline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from proprio_teacher import ENV_ID, expected_label, make_teacher

from rpd.data.vec_envs import EnvConfig, make_vec_env
from rpd.labels.live import TeacherLabeler
from rpd.labels.memory import InMemoryLabelSource
from rpd.student.buffer import RPDRolloutBuffer
from rpd.student.losses import LambdaSchedule
from rpd.student.rpdppo import RPDPPO

N_ENVS, N_STEPS = 2, 32


@pytest.fixture(scope="module")
def venv() -> Iterator[Any]:
    env = make_vec_env(EnvConfig(ENV_ID), N_ENVS, seed=0, with_env_state=True)
    yield env
    env.close()


@pytest.fixture(scope="module")
def labeler() -> Iterator[TeacherLabeler]:
    with TeacherLabeler(make_teacher(), ENV_ID, batch_size=16) as lab:
        yield lab


def _model(venv: Any, source: Any, **kw: Any) -> RPDPPO:
    kw = {**dict(n_steps=N_STEPS, batch_size=32, n_epochs=2, seed=0, device="cpu",
                 policy_kwargs=dict(net_arch=dict(pi=[32], vf=[32]))), **kw}
    return RPDPPO("MlpPolicy", venv, label_source=source, **kw)


@pytest.mark.slow
def test_labels_stay_aligned_with_their_transitions(labeler: TeacherLabeler) -> None:
    # a 20-step horizon: each env auto-resets once inside the 32-step rollout
    venv = make_vec_env(EnvConfig(ENV_ID, max_episode_steps=20), N_ENVS, seed=0,
                        with_env_state=True)
    source = InMemoryLabelSource(labeler.label_env_states)
    try:
        model = _model(venv, source)
        model.learn(N_ENVS * N_STEPS)
    finally:
        venv.close()
    buf = model.rollout_buffer
    assert isinstance(buf, RPDRolloutBuffer) and buf.label_mask.all()
    # after get() the arrays are flattened [T*E, ...] in the same order
    obs = buf.observations.reshape(-1, buf.observations.shape[-1])
    np.testing.assert_allclose(buf.teacher_action.reshape(len(obs), -1), expected_label(obs),
                               atol=1e-4)
    assert model.live_teacher_calls == N_ENVS * N_STEPS == len(source)
    # the episode-start states after the auto-resets (step 20 of each env) are among them,
    # labelled from their own state (not the terminal one before the reset)
    starts = buf.episode_starts.reshape(-1).astype(bool)
    assert starts.sum() == 2 * N_ENVS


def test_distill_gradient_reaches_the_policy_mean(venv: Any) -> None:
    model = _model(venv, None)
    obs = torch.as_tensor(np.stack([venv.observation_space.sample() for _ in range(8)]))
    dist = model.policy.get_distribution(obs)
    target = torch.ones(8, 7)
    loss = model.distill_term(dist, target, torch.ones(8, dtype=torch.bool))
    model.policy.zero_grad()
    loss.backward()
    grad = model.policy.action_net.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # mse does not touch log_std; bc does
    assert model.policy.log_std.grad is None or model.policy.log_std.grad.abs().sum() == 0
    model.distill = "bc"
    model.policy.zero_grad()
    model.distill_term(model.policy.get_distribution(obs), target,
                       torch.ones(8, dtype=torch.bool)).backward()
    assert model.policy.log_std.grad.abs().sum() > 0


def test_distill_pulls_the_mean_toward_the_teacher(venv: Any,
                                                   labeler: TeacherLabeler) -> None:
    """Same rollouts, λ = 0 vs λ = 5: only the distill term separates the students."""
    errors = {}
    for lam in (0.0, 5.0):
        model = _model(venv, InMemoryLabelSource(labeler.label_env_states),
                       lambda_schedule=LambdaSchedule("constant", lam), n_epochs=10,
                       learning_rate=1e-3)
        model.learn(3 * N_ENVS * N_STEPS)
        obs = model.rollout_buffer.observations.reshape(N_ENVS * N_STEPS, -1)
        mean = model.policy.get_distribution(torch.as_tensor(obs)).distribution.mean
        errors[lam] = float(((mean.detach().numpy() - expected_label(obs)) ** 2).sum(1).mean())
        if lam == 0:
            assert model.live_teacher_calls == 0  # λ = 0: teacher never consulted
    assert errors[5.0] < 0.5 * errors[0.0]


def test_live_budget_masks_the_rest(venv: Any, labeler: TeacherLabeler) -> None:
    model = _model(venv, InMemoryLabelSource(labeler.label_env_states), live_budget=10)
    model.learn(N_ENVS * N_STEPS)
    assert model.live_teacher_calls == 10
    assert model.rollout_buffer.label_mask.sum() == 10


def test_decayed_lambda_stops_teacher_calls(venv: Any, labeler: TeacherLabeler) -> None:
    model = _model(venv, InMemoryLabelSource(labeler.label_env_states),
                   lambda_schedule=LambdaSchedule("linear", 1.0, 2 * N_ENVS * N_STEPS))
    model.learn(3 * N_ENVS * N_STEPS)
    # λ is that of the update after each rollout: 0.5 after the first (labelled), 0 from the
    # second on (not labelled, the teacher is not asked)
    assert model.live_teacher_calls == N_ENVS * N_STEPS


def test_cache_hits_are_not_asked_again(venv: Any, labeler: TeacherLabeler) -> None:
    source = InMemoryLabelSource(labeler.label_env_states)
    first = _model(venv, source)
    first.learn(N_ENVS * N_STEPS)
    # a fresh model with the same seed replays the same first rollout: all hits
    second = _model(venv, source)
    second.learn(N_ENVS * N_STEPS)
    assert second.cache_hits == N_ENVS * N_STEPS and second.live_teacher_calls == 0
    assert second.rollout_buffer.label_mask.all()


def test_offline_phase_lowers_action_error(venv: Any, labeler: TeacherLabeler) -> None:
    source = InMemoryLabelSource(labeler.label_env_states)
    _model(venv, source).learn(N_ENVS * N_STEPS)
    obs, actions = source.entries()
    model = _model(venv, None)

    def error() -> float:
        mean = model.policy.get_distribution(torch.as_tensor(obs)).distribution.mean
        return float(((mean.detach().numpy() - actions) ** 2).sum(1).mean())

    before = error()
    ticks: list[int] = []
    history = model.fit_offline(obs, actions, steps=210, batch_size=32, progress=ticks.append)
    assert len(history) == 210
    assert ticks == [20] * 10 + [10]  # a progress bar's updates add up to the steps
    assert error() < 0.2 * before


@pytest.mark.slow
def test_label_replay_holds_labelled_rollouts_and_pulls_toward_them(
        venv: Any, labeler: TeacherLabeler) -> None:
    source = InMemoryLabelSource(labeler.label_env_states)
    model = _model(venv, source, label_replay=10_000)
    model.learn(2 * N_ENVS * N_STEPS)
    # the first rollout is in the replay after the first update, the second after the second
    obs, actions = model.replay.sample(500)
    assert len(model.replay) == 2 * N_ENVS * N_STEPS
    np.testing.assert_allclose(actions, expected_label(obs), atol=1e-4)
    # same seed and first rollout: only the replay (labels of +1 on states seen before)
    # separates the two students
    probe = obs[:64]
    gaps = {}
    for capacity in (0, 1000):
        model = _model(venv, InMemoryLabelSource(labeler.label_env_states),
                       label_replay=capacity, n_epochs=10, learning_rate=1e-3)
        if capacity:
            model.label_replay_buffer().add(probe, np.ones((len(probe), 7), np.float32))
        model.learn(N_ENVS * N_STEPS)
        mean = model.policy.get_distribution(torch.as_tensor(probe)).distribution.mean
        gaps[capacity] = float(((mean.detach().numpy() - 1) ** 2).sum(1).mean())
    assert gaps[1000] < 0.8 * gaps[0], gaps
