"""`rpd run` end to end in a tiny configuration (real demos, teacher, students, report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--steps", "256", "--envs", "2", "--demos-num", "2", "--teacher-steps", "10",
        "--teacher-episodes", "2", "--eval-every", "128", "--eval-episodes", "1",
        "--live-budget", "8", "--workers", "1"]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`rpd run` as a user runs it (a subprocess, so its stages' output is real)."""
    return subprocess.run([sys.executable, "-m", "rpd.cli", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("run") / "quick"
    return out, _run("--out", out, *TINY)


def test_a_tiny_run_writes_the_report_and_a_summary(chain: tuple[Path, subprocess.CompletedProcess]
                                                    ) -> None:
    out, result = chain
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("demos", "fast-demos", "teacher", "teacher-eval", "train-rpd-s0",
                  "train-ppo-s0", "report"):
        assert f"[{stage}] done in" in result.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert report  # one task group at least
    assert (out / "report" / "PushCube-v1.png").is_file()
    assert "rpd run finished" in result.stdout and "student rpd-s0" in result.stdout
    rpd = json.loads((out / "runs" / "PushCube-v1-sparse-rpd-s0" / "student.json").read_text())
    assert 0 < rpd["metrics"]["live_teacher_calls"] <= 8 * 2  # the budget per rollout holds
    log = [json.loads(line) for line in (out / "run.log").read_text().splitlines()]
    assert [e["stage"] for e in log][:4] == ["demos", "fast-demos", "teacher", "teacher-eval"]
    assert "trajectory.x4." in log[2]["command"]  # the teacher learns from the fast demos
    assert all(e["rc"] == 0 for e in log)


def test_a_second_invocation_skips_every_finished_stage(
        chain: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = chain
    result = _run("--out", out, *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("demos", "fast-demos", "teacher", "teacher-eval", "train-rpd-s0",
                  "train-ppo-s0"):
        assert f"[{stage}] skipped" in result.stdout
    assert "[report] done in" in result.stdout  # the report is always redrawn


def test_a_failing_stage_is_one_line_exit_2_and_keeps_finished_work(
        chain: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    out = tmp_path / "quick"
    shutil.copytree(chain[0], out)
    # more steps -> the student runs resume, with an option rpd train refuses
    result = _run("--out", out, *TINY[:1], "512", *TINY[2:], "--train-args", "--n-epochs 0")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rpd: error: stage train-rpd-s0 failed (exit code 2)")
    assert "--n-epochs 0" in last and "to resume" in last
    for kept in ("demos/PushCube-v1", "teacher/teacher.json",
                 "runs/PushCube-v1-sparse-rpd-s0/student.json",
                 "runs/PushCube-v1-sparse-ppo-s0/student.json"):
        assert (out / kept).exists(), kept


@pytest.mark.parametrize("args, message", [
    (["--env", "NoSuchTask-v9"], "--env 'NoSuchTask-v9': unknown task"),
    (["--teacher", "."], "not a teacher checkpoint"),
    (["--seeds", "a,b"], "--seeds 'a,b'"),
    (["--demo-speedup", "0"], "--demo-speedup 0"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = _run("--out", tmp_path / "out", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_fast_demos_stage_feeds_the_teacher(tmp_path: Path) -> None:
    result = _run("--out", tmp_path / "out", "--demo-speedup", "4", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = {line.split("]")[0][1:]: line for line in result.stdout.splitlines()}
    fast = "demos/PushCube-v1/trajectory.x4.none.pd_ee_delta_pose.physx_cpu.h5"
    assert "rpd demos speedup" in lines["fast-demos"] and "--factor 4" in lines["fast-demos"]
    assert f"--demos {tmp_path / 'out' / fast}" in lines["teacher"]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
