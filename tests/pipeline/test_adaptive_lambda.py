"""`--lambda-schedule adaptive` end to end: evaluations drive λ, a resume keeps it, and a missing
teacher success is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rpd.cli import main

ENV_ID = "PushCube-v1"
TINY = ["--env", ENV_ID, "--envs", "1", "--n-steps", "64", "--batch-size", "32",
        "--n-epochs", "1", "--eval-every", "64", "--eval-episodes", "1", "--net-arch", "32"]
# a target of 0 (teacher 0 + margin 0): every evaluation is ahead, so λ halves from the second
ALWAYS_AHEAD = ["--lambda-schedule", "adaptive", "--teacher-success", "0",
                "--lambda-margin", "0"]


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _tb_lambdas(run: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[tuple[int, float]] = []
    for events in sorted((run / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        values += [(e.step, e.value) for e in acc.Scalars("distill/lambda")]
    return [v for _, v in sorted(values)]


@pytest.mark.slow
def test_evaluations_halve_lambda_and_a_resume_continues_it(teacher_dir: Path,
                                                            tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    code, output = _rpd("train", *TINY, *ALWAYS_AHEAD, "--teacher", str(teacher_dir),
                        "--steps", "256", "--out", str(whole))
    assert code == 0, output
    schedule = json.loads((whole / "student.json").read_text())["lambda_schedule"]
    assert schedule["kind"] == "adaptive" and schedule["teacher_success"] == 0.0
    assert [(c["step"], c["lam"]) for c in schedule["changes"]] == [
        (128, 0.5), (192, 0.25), (256, 0.125)]
    assert schedule["lam"] == 0.125
    # each update trains with the λ of the evaluations before it
    assert _tb_lambdas(whole) == [1.0, 1.0, 0.5, 0.25]

    part = tmp_path / "part"  # stopped after λ's first change, resumed to the end
    code, output = _rpd("train", *TINY, *ALWAYS_AHEAD, "--teacher", str(teacher_dir),
                        "--steps", "128", "--out", str(part))
    assert code == 0, output
    code, output = _rpd("train", *TINY, *ALWAYS_AHEAD, "--teacher", str(teacher_dir),
                        "--steps", "256", "--out", str(part), "--resume")
    assert code == 0, output
    resumed = json.loads((part / "student.json").read_text())["lambda_schedule"]
    assert resumed["changes"] == schedule["changes"]


def test_adaptive_lambda_without_a_teacher_success_is_one_line(teacher_dir: Path,
                                                               tmp_path: Path) -> None:
    code, output = _rpd("train", *TINY, "--lambda-schedule", "adaptive", "--teacher",
                        str(teacher_dir), "--steps", "64", "--out", str(tmp_path / "run"))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert f"no {teacher_dir}/eval/{ENV_ID}-h50.json" in output and "--teacher-success" in output
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
    # a shifted teacher's success is the one in its shifted view
    code, output = _rpd("train", *TINY, "--lambda-schedule", "adaptive", "--teacher",
                        str(teacher_dir), "--teacher-camera-shift", "15", "--steps", "64",
                        "--out", str(tmp_path / "run"))
    assert code == 2 and f"no {teacher_dir}/eval/{ENV_ID}-h50-shift15.json" in output, output
    assert "--camera-shift 15" in output and not (tmp_path / "run").exists()
    code, output = _rpd("train", *TINY, "--lambda-schedule", "adaptive", "--no-teacher",
                        "--steps", "64", "--out", str(tmp_path / "ppo"))
    assert code == 2 and "plain PPO" in output, output
