"""A run stopped at a checkpoint and resumed ends exactly as the run that never stopped."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from proprio_teacher import ENV_ID

from rpd.cli import main
from rpd.data.seeding import EPISODE_SEED_STEP
from rpd.data.vec_envs import EnvConfig, make_vec_env
from rpd.labels import model as label_model
from rpd.student.rpdppo import RPDPPO

# PUSH_RUN: 2 envs in one worker process, 20-step episodes (each checkpoint at 128 steps
# falls mid-episode), a label replay, and the label model on (its default needs 2,000 stored
# labels; here it fits from 48, quickly, so it answers states before the checkpoint)
RUN = ["--env", ENV_ID, "--envs", "2", "--env-workers", "1", "--n-steps", "32",
       "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128", "--eval-episodes", "2",
       "--net-arch", "32", "--horizon", "20", "--label-replay", "100", "--seed", "5"]
POLICY_COLUMNS = ("step", "success", "return", "live_teacher_calls")


def _rpd(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def _policy(run: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The student's parameters and its optimizer's state tensors."""
    model = RPDPPO.load(run / "student.zip", device="cpu")
    params = [p.detach().numpy().copy() for p in model.policy.parameters()]
    moments = [v.numpy().copy() for s in model.policy.optimizer.state_dict()["state"].values()
               for v in s.values() if hasattr(v, "numpy")]
    return params, moments


def _eval_rows(run: Path) -> list[tuple[str, ...]]:
    with open(run / "eval.csv", newline="") as f:
        return [tuple(r[c] for c in POLICY_COLUMNS) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rpd.teachers.scripted import ScriptedTeacher

    monkeypatch.setattr(label_model, "EnsembleConfig", functools.partial(
        label_model.EnsembleConfig, members=3, hidden=32, steps=200, min_rows=48))
    teacher = str(ScriptedTeacher.build(ENV_ID).save(tmp_path / "scripted"))
    whole, split = tmp_path / "whole", tmp_path / "split"
    _rpd("train", *RUN, "--teacher", teacher, "--steps", "256", "--out", str(whole))
    _rpd("train", *RUN, "--teacher", teacher, "--steps", "128", "--out", str(split))
    _rpd("train", *RUN, "--teacher", teacher, "--steps", "256", "--out", str(split),
         "--resume")
    # the final evaluation, and the checkpoint taken with it, describe the final student
    final, _ = _policy(whole)
    latest = RPDPPO.load(whole / "checkpoints" / "latest.zip", device="cpu")
    for x, y in zip(final, latest.policy.parameters(), strict=True):
        np.testing.assert_array_equal(x, y.detach().numpy())
    rows = _eval_rows(whole)
    assert [r[0] for r in rows] == ["128", "256"]
    assert _eval_rows(split) == rows
    (a, a_opt), (b, b_opt) = _policy(whole), _policy(split)
    for x, y in zip(a + a_opt, b + b_opt, strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_label_model_fits_alike_in_any_row_order_and_continues_from_its_state(
        tmp_path: Path) -> None:
    """A resumed run reads its labels back from the store, in the store's order, and its
    label model from train_state.pt: the fits must not tell the difference."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(300, 6)).astype(np.float32)
    act = np.tanh(obs[:, :3] * 2)
    cfg = label_model.EnsembleConfig(members=3, hidden=16, steps=40, min_rows=10)
    a, b = label_model.LabelEnsemble(cfg, seed=1), label_model.LabelEnsemble(cfg, seed=1)
    a.fit(obs[:200], act[:200])
    order = rng.permutation(200)
    b.fit(obs[order], act[order])
    np.testing.assert_array_equal(a.predict(obs)[0], b.predict(obs)[0])
    torch.save(a.state_dict(), tmp_path / "state.pt")
    c = label_model.LabelEnsemble(cfg, seed=1)
    c.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    np.testing.assert_array_equal(a.predict(obs)[1], c.predict(obs)[1])
    a.fit(obs, act)  # a warm refit, seeded by the fit count
    c.fit(obs, act)
    np.testing.assert_array_equal(a.predict(obs)[0], c.predict(obs)[0])


@pytest.mark.parametrize("batched", [False, True], ids=["worker-process", "batched"])
@pytest.mark.slow
def test_restarting_the_episodes_at_a_step_starts_those_of_a_run_resumed_there(
        batched: bool) -> None:
    """What a run does at each checkpoint (`RPDPPO.restart_episodes`) gives every env the
    episode a run resumed at that checkpoint starts with, on both VecEnv paths."""
    n = 1 if batched else 2

    def episode_seeds(env: object) -> list[int]:
        return [info["episode_seed"] for info in env.reset_infos]  # type: ignore[attr-defined]

    going = make_vec_env(EnvConfig(ENV_ID), n, seed=3, batched=batched, workers=1)
    resumed = make_vec_env(EnvConfig(ENV_ID), n, seed=3, start_step=128, batched=batched,
                           workers=1)
    try:
        going.seed(3)  # as SB3 seeds a model's env
        going.reset()
        first = episode_seeds(going)
        going.set_options({EPISODE_SEED_STEP: 128})
        going.reset()
        resumed.seed(3)
        resumed.reset()
        assert episode_seeds(going) == episode_seeds(resumed) != first
    finally:
        going.close()
        resumed.close()
