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
        "--heldout-episodes", "2", "--cache", "--cache-rollouts", "1",
        "--live-budget", "8", "--workers", "1"]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`rpd run` as a user runs it (a subprocess, so its stages' output is real)."""
    return subprocess.run([sys.executable, "-m", "rpd.cli", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("run") / "quick"
    return out, _run("--out", out, *TINY)


@pytest.mark.slow
def test_a_tiny_run_writes_the_report_and_a_summary(chain: tuple[Path, subprocess.CompletedProcess]
                                                    ) -> None:
    out, result = chain
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("demos", "fast-demos", "teacher", "teacher-eval", "cache", "train-rpd-s0",
                  "train-ppo-s0", "heldout-rpd-s0", "heldout-ppo-s0", "report"):
        assert f"[{stage}] done in" in result.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert report  # one task group at least
    assert (out / "report" / "PushCube-v1.png").is_file()
    assert "rpd run finished" in result.stdout and "student rpd-s0" in result.stdout
    assert "held-out success" in result.stdout and "(2 episodes)" in result.stdout
    assert "held-out success" in (out / "report" / "report.md").read_text()
    rpd = json.loads((out / "runs" / "PushCube-v1-sparse-rpd-s0" / "student.json").read_text())
    assert 0 < rpd["metrics"]["live_teacher_calls"] <= 8 * 2  # the budget per rollout holds
    log = [json.loads(line) for line in (out / "run.log").read_text().splitlines()]
    assert [e["stage"] for e in log][:4] == ["demos", "fast-demos", "teacher", "teacher-eval"]
    assert "trajectory.x4." in log[2]["command"]  # the teacher learns from the fast demos
    assert all(e["rc"] == 0 for e in log)


@pytest.mark.slow
def test_a_second_invocation_skips_every_finished_stage(
        chain: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = chain
    result = _run("--out", out, *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("demos", "fast-demos", "teacher", "teacher-eval", "train-rpd-s0",
                  "train-ppo-s0", "heldout-rpd-s0", "heldout-ppo-s0"):
        assert f"[{stage}] skipped" in result.stdout
    assert "[report] done in" in result.stdout  # the report is always redrawn


@pytest.mark.slow
def test_a_failing_stage_is_one_line_exit_2_and_keeps_finished_work(
        chain: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    out = tmp_path / "quick"
    shutil.copytree(chain[0], out)
    # a new seed's student run, with an option rpd train refuses
    result = _run("--out", out, *TINY, "--seeds", "1", "--train-args", "--n-epochs 0")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rpd: error: stage train-rpd-s1 failed (exit code 2)")
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


def test_a_changed_teacher_view_is_measured_and_reported_in_that_view(tmp_path: Path) -> None:
    """Students of a teacher shown a rotated camera (or a repainted object) are compared with
    the teacher's success in that view: the chain measures it there and reports with it."""
    config = tmp_path / "run.yaml"
    config.write_text("command: run\ntrain:\n  teacher_object_color: green\n")
    for extra, suffix, flags in (
            (["--train-args", "--teacher-camera-shift 15"], "-shift15", "--camera-shift 15"),
            (["--config", str(config)], "-green", "--object-color green")):
        result = _run("--out", tmp_path / "out", "--dry-run", *extra)
        assert result.returncode == 0, result.stderr
        lines = {line.split("]")[0][1:]: line for line in result.stdout.splitlines()}
        path = tmp_path / "out" / "eval" / f"teacher-PushCube-v1-h50{suffix}.json"
        assert flags in lines["teacher-eval"] and f"--json {path}" in lines["teacher-eval"]
        assert f"--teacher-eval {path}" in lines["report"]
    assert not (tmp_path / "out").exists()


def _episode_seeds(out: Path) -> dict[str, set[int]]:
    """Every episode seed a finished chain started an episode from, by stage, read from the
    files each stage wrote."""
    import numpy as np

    from rpd.data.seeding import episode_seeds
    from rpd.data.seeds import TRAINING
    from rpd.data.store import TeacherStore

    demos = set()
    for js in (out / "demos" / "PushCube-v1").glob("*.json"):
        demos |= {int(e["episode_seed"]) for e in json.loads(js.read_text())["episodes"]}
    rows = TeacherStore.open(out / "store").read(["episode", "source"])
    rollout = np.isin(rows.source, [1, 2])  # teacher and noisy rollouts: reset seeds
    cache = set(rows.episode[rollout].tolist())
    teacher = json.loads((out / "eval" / "teacher-PushCube-v1-h50.json").read_text())
    runs = sorted((out / "runs").glob("PushCube-v1-sparse-*-s0"))
    evaluation, held_out, training = set(), set(), set()
    for run in runs:
        cfg = json.loads((run / "config.json").read_text())
        evaluation |= set(range(cfg["eval_seed"], cfg["eval_seed"] + cfg["eval_episodes"]))
        held = json.loads((run / "eval" / "PushCube-v1-h50-heldout.json").read_text())
        held_out |= {e["seed"] for e in held["per_episode"]}
        # the first episodes of each training env, drawn as the run's envs draw them
        training |= {int(episode_seeds(cfg["seed"], k).integers(TRAINING.start, TRAINING.stop))
                     for k in range(cfg["envs"])}
    return dict(demos=demos, cache=cache, evaluation=evaluation, held_out=held_out,
                teacher_evaluation={e["seed"] for e in teacher["per_episode"]},
                training=training)


@pytest.mark.slow
def test_the_stages_of_a_chain_never_share_an_episode_seed(
        chain: tuple[Path, subprocess.CompletedProcess]) -> None:
    import itertools

    out, result = chain
    assert result.returncode == 0, result.stderr[-2000:]
    used = _episode_seeds(out)
    assert all(used.values()), {k: len(v) for k, v in used.items()}  # every stage drew seeds
    for (a, sa), (b, sb) in itertools.combinations(used.items(), 2):
        assert not sa & sb, f"{a} and {b} share seeds {sorted(sa & sb)[:5]}"


@pytest.mark.slow
def test_a_stage_made_by_other_options_is_refused_in_one_line(
        chain: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = chain
    before = (out / "stages.json").read_text()
    result = _run("--out", out, *TINY, "--teacher-steps", "20")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "differs in --steps" in result.stderr and str(out / "teacher") in result.stderr
    result = _run("--out", out, *TINY, "--train-args", "--n-epochs 3", "--dry-run")
    assert result.returncode == 2 and "differs in --n-epochs" in result.stderr
    assert (out / "stages.json").read_text() == before  # nothing recorded, nothing re-made


@pytest.mark.slow
def test_more_steps_continue_every_finished_student(
        chain: tuple[Path, subprocess.CompletedProcess]) -> None:
    """Last in this file: it grows the shared chain (a run keeps its teacher's absolute path,
    so a copy of the chain elsewhere could not be resumed)."""
    out = chain[0]
    result = _run("--out", out, *TINY[:1], "384", *TINY[2:])
    assert result.returncode == 0, result.stderr[-2000:]
    for method in ("rpd", "ppo"):
        run = out / "runs" / f"PushCube-v1-sparse-{method}-s0"
        assert json.loads((run / "student.json").read_text())["metrics"]["steps"] >= 384
        held = json.loads((run / "eval" / "PushCube-v1-h50-heldout.json").read_text())
        assert held["step"] >= 384 and held["seed_range"] == "held-out"
    config = json.loads((out / "runs" / "PushCube-v1-sparse-rpd-s0" / "config.json").read_text())
    assert config["lambda_decay_steps"] == int(0.6 * 256)  # the schedule it started with
