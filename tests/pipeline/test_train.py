"""`rpd train` / `rpd eval` end to end on real ManiSkill envs (tiny settings, CPU)."""

from __future__ import annotations

import csv
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from proprio_teacher import ENV_ID, expected_label
from video_check import assert_playable

from rpd.cli import main
from rpd.data.store import TeacherStore
from rpd.teachers.base import load_teacher

# one env in-process (DummyVecEnv) keeps these tests fast; tests/student/test_rpdppo.py runs
# the subprocess envs
TINY = ["--env", ENV_ID, "--envs", "1", "--n-steps", "64", "--batch-size", "32",
        "--n-epochs", "2", "--eval-every", "64", "--eval-episodes", "1", "--net-arch", "32"]


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _labels(store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, obs, teacher_action) of every row in a teacher-action store."""
    rows = TeacherStore.open(store).read(["key", "obs", "teacher_action"])
    return rows.key, rows.obs, rows.teacher_action


def _tb_scalars(run: Path) -> dict[str, list[float]]:
    """Every scalar series a run wrote to TensorBoard, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[float]] = {}
    for events in sorted((run / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


def _eval_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "eval.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def rpd_run(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 RPD steps with live labels only (no --cache): an empty store filled in the run dir,
    and a label replay of 100 rows."""
    out = tmp_path_factory.mktemp("runs") / "rpd"
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "128",
                        "--label-replay", "100", "--out", str(out))
    assert code == 0, output
    return out


@pytest.mark.slow
def test_rpd_run_writes_a_complete_run_dir(rpd_run: Path, teacher_dir: Path) -> None:
    meta = json.loads((rpd_run / "student.json").read_text())
    assert meta["teacher"]["fingerprint"] == load_teacher(teacher_dir).fingerprint
    assert meta["lambda_schedule"] == dict(kind="constant", value=1.0, decay_steps=None)
    assert meta["metrics"]["steps"] == 128
    assert meta["metrics"]["live_teacher_calls"] == 128  # every state novel: labelled once
    assert [int(r["step"]) for r in _eval_rows(rpd_run)] == [64, 128]
    assert [int(r["live_teacher_calls"]) for r in _eval_rows(rpd_run)] == [64, 128]
    assert (rpd_run / "student.zip").is_file() and (rpd_run / "checkpoints/latest.zip").is_file()
    assert list((rpd_run / "tb").rglob("events.out.tfevents.*"))
    # the diagnosis scalars of a copy: error per action dim and gripper agreement (issue 14)
    tags = _tb_scalars(rpd_run)
    dims = [tags[f"distill/mse_dim_{i}"] for i in range(7)]
    assert all(len(d) >= 1 and np.isfinite(d).all() and (np.asarray(d) >= 0).all()
               for d in dims)
    agreement = tags["distill/gripper_agreement"]
    assert len(agreement) >= 1 and np.isfinite(agreement).all()


@pytest.mark.slow
def test_a_state_student_records_video_too(rpd_run: Path, tmp_path: Path) -> None:
    video = tmp_path / "video"
    code, output = _rpd("eval", "--student", str(rpd_run), "--env", ENV_ID, "--episodes", "1",
                        "--video", str(video), "--json", str(tmp_path / "eval.json"))
    assert code == 0, output
    assert_playable(next(video.glob("*.mp4")), frames=50, size=128)


def test_the_best_evaluation_keeps_its_policy_and_eval_can_pick_it(rpd_run: Path,
                                                                   tmp_path: Path) -> None:
    from rpd.pipeline.evaluate import load_student

    rows = _eval_rows(rpd_run)
    best = json.loads((rpd_run / "checkpoints" / "best.json").read_text())
    top = max(float(r["success"]) for r in rows)
    first_top = next(int(r["step"]) for r in rows if float(r["success"]) == top)
    assert (best["step"], best["success"]) == (first_top, top)  # a tie keeps the earlier
    assert sorted(best) == sorted(rows[0])  # eval.csv's columns, under its names
    model, _ = load_student(rpd_run, checkpoint="best")
    assert model.num_timesteps == best["step"]
    out = tmp_path / "best.json"
    code, output = _rpd("eval", "--student", str(rpd_run), "--env", ENV_ID, "--episodes", "1",
                        "--checkpoint", "best", "--json", str(out), "--workers", "1")
    assert code == 0, output
    assert json.loads(out.read_text())["checkpoint"] == "best"


def test_eval_runs_the_checkpoints_of_an_unfinished_run(rpd_run: Path, tmp_path: Path) -> None:
    """A run still training (or killed) has checkpoints but no student.zip/student.json: its
    latest and best checkpoints can be evaluated, its final policy cannot."""
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    (run / "student.zip").unlink()
    (run / "student.json").unlink()
    out = tmp_path / "latest.json"
    code, output = _rpd("eval", "--student", str(run), "--env", ENV_ID, "--episodes", "1",
                        "--checkpoint", "latest", "--json", str(out), "--workers", "1")
    assert code == 0, output
    res = json.loads(out.read_text())
    assert (res["checkpoint"], res["step"], res["horizon"]) == ("latest", 128, 50)
    code, output = _rpd("eval", "--student", str(run), "--env", ENV_ID, "--episodes", "1",
                        "--checkpoint", "best", "--workers", "1", "--held-out")
    assert code == 0, output
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    # a held-out evaluation is named apart: it does not overwrite the default seeds' file
    assert not (run / "eval" / f"{ENV_ID}-h50-best.json").exists()
    held = json.loads((run / "eval" / f"{ENV_ID}-h50-best-heldout.json").read_text())
    assert held["step"] == best["step"] and held["seed_range"] == "held-out"
    code, output = _rpd("eval", "--student", str(run), "--env", ENV_ID, "--episodes", "1")
    assert code == 2 and "--checkpoint latest|best" in output.strip().splitlines()[-1], output
    # checkpoints of an older rpd do not say which env (camera, horizon) the student saw
    latest = run / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({k: v for k, v in json.loads(latest.read_text()).items()
                                  if k != "env"}))
    code, output = _rpd("eval", "--student", str(run), "--env", ENV_ID, "--episodes", "1",
                        "--checkpoint", "latest")
    assert code == 2 and "resume the run" in output.strip().splitlines()[-1], output


def test_keep_if_best_replaces_only_on_a_higher_success(tmp_path: Path) -> None:
    from rpd.pipeline.train_eval import keep_if_best

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for step, success in ((10, 0.5), (20, 0.3), (30, 0.5), (40, 0.7), (50, 0.1)):
        (ckpt / "latest.zip").write_bytes(f"model of step {step}".encode())
        keep_if_best(ckpt, dict(step=step, success=success, ret=-1.0, wall_time_s=1.0,
                                 live_teacher_calls=0))
    best = json.loads((ckpt / "best.json").read_text())
    assert (best["step"], best["return"]) == (40, -1.0)
    assert (ckpt / "best.zip").read_bytes() == b"model of step 40"
    assert not list(ckpt.glob(".best*"))
    # a full disk (the temporary copy is /dev/full): one error, the old best kept, no litter
    from rpd.errors import StorageError

    (ckpt / ".best.tmp.zip").symlink_to("/dev/full")
    with pytest.raises(StorageError, match=r"step 60.*No space left on device"):
        keep_if_best(ckpt, dict(step=60, success=0.9, ret=-1.0, wall_time_s=1.0,
                                 live_teacher_calls=0))
    assert (ckpt / "best.zip").read_bytes() == b"model of step 40"
    assert not list(ckpt.glob(".best*"))


def test_written_back_labels_belong_to_their_states(rpd_run: Path) -> None:
    key, obs, action = _labels(rpd_run / "cache")
    assert len(key) == 128
    np.testing.assert_allclose(action, expected_label(obs), atol=1e-4)
    np.testing.assert_array_equal(key, obs)  # the run's own store: key = raw observation


@pytest.mark.slow
def test_cache_hits_live_misses_and_write_back(rpd_run: Path, teacher_dir: Path,
                                               tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(rpd_run / "cache", cache)
    out = tmp_path / "run"
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "128",
                        "--cache", str(cache), "--cache-radius", "1e-5", "--offline-steps", "100",
                        "--label-replay", "50", "--out", str(out))
    assert code == 0, output
    m = json.loads((out / "student.json").read_text())["metrics"]
    # same env seeds -> the episode-start states are already cached; the rest is novel
    assert 0 < m["cache_hit_rate"] < 1
    assert 0 < m["live_teacher_calls"] < 128
    assert m["offline"]["entries"] == 128 and m["offline"]["mse_end"] < m["offline"]["mse_start"]
    assert m["offline"]["replayed"] == 50  # the replay keeps the latest 50 of them
    _, obs, action = _labels(cache)
    assert len(obs) == 128 + m["live_teacher_calls"]
    np.testing.assert_allclose(action, expected_label(obs), atol=1e-4)
    assert not (out / "cache").exists()


@pytest.mark.slow
def test_resume_continues_the_run(rpd_run: Path, teacher_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    config = json.loads((run / "config.json").read_text())
    for key in ("teacher_camera_shift", "teacher_object_color"):  # a run from an older rpd
        del config[key]
    (run / "config.json").write_text(json.dumps(config))
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume")
    assert code == 0, output
    assert "192/192" in output  # the progress bar counts the steps before the resume too
    rows = _eval_rows(run)
    assert [int(r["step"]) for r in rows] == [64, 128, 192]
    # the bar shows the latest evaluation: the first part's until the resumed run's own
    for r in rows[1:]:
        assert f"eval {float(r['success']):.2f} at {r['step']}, {r['step']} live calls]" in output
    # the resumed envs start episodes the first part did not see (their seed streams restart
    # keyed by the checkpoint's step): every state is novel, none a cache hit
    assert int(rows[-1]["live_teacher_calls"]) == 192
    assert float(rows[-1]["wall_time_s"]) > float(rows[1]["wall_time_s"])
    assert json.loads((run / "student.json").read_text())["metrics"]["steps"] == 192
    # a finished run resumed with the same --steps is not evaluated (or listed) again, and a
    # row written after the last checkpoint (killed before checkpointing) is dropped
    with open(run / "eval.csv", "a") as f:
        f.write("256,0.5,0.5,99.0,200\n")
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume")
    assert code == 0, output
    assert [int(r["step"]) for r in _eval_rows(run)] == [64, 128, 192]
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "256",
                        "--out", str(run), "--resume", "--lambda", "2")
    assert code == 2 and "lam" in output and "--resume" in output


@pytest.mark.slow
def test_a_resumed_run_continues_with_its_label_replay(rpd_run: Path, teacher_dir: Path,
                                                      tmp_path: Path) -> None:
    from rpd.labels.replay import LabelReplay

    run, replay = tmp_path / "run", tmp_path / "run" / "checkpoints" / "replay.npz"
    shutil.copytree(rpd_run, run)
    # checkpoints come after their rollout's update: at 128 the replay holds rollouts 1 and 2
    saved = LabelReplay.load(replay, 128, 100)
    assert saved is not None and (len(saved), saved.pos) == (100, 28)
    assert LabelReplay.load(replay, 192, 100) is None and LabelReplay.load(replay, 128, 50) is None
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--label-replay", "100",
                        "--steps", "256", "--out", str(run), "--resume")
    assert code == 0, output
    resumed = LabelReplay.load(replay, 256, 100)  # + the resumed rollouts' 2 x 64 rows
    assert resumed is not None and (len(resumed), resumed.pos) == (100, 56)  # from empty: 28
    # once λ is 0 for good the replay is unused, and its file (245 MB at 20k 64 px frames) goes
    decayed = tmp_path / "decayed"
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--label-replay", "100",
                        "--lambda-schedule", "cosine", "--lambda-decay-steps", "100",
                        "--steps", "128", "--out", str(decayed))
    assert code == 0, output
    assert (decayed / "checkpoints" / "latest.zip").is_file()
    assert not list((decayed / "checkpoints").glob("*replay*"))


def test_plain_ppo_then_eval(tmp_path: Path) -> None:
    out = tmp_path / "ppo"
    code, output = _rpd("train", *TINY, "--no-teacher", "--steps", "64", "--log-std-init",
                        "-1.2", "--out", str(out))
    assert code == 0, output
    meta = json.loads((out / "student.json").read_text())
    assert meta["teacher"] is None and meta["lambda_schedule"] is None
    from stable_baselines3 import PPO

    log_std = PPO.load(out / "student.zip", device="cpu").policy.log_std.detach().numpy()
    assert abs(log_std.mean() + 1.2) < 0.05  # started at -1.2, one short update since
    assert meta["metrics"]["live_teacher_calls"] == 0 and not (out / "cache").exists()
    assert meta["config"]["gamma"] is None and meta["config"]["n_epochs"] == 2
    assert f"eval {meta['metrics']['eval_success']:.2f} at 64]" in output  # no live calls
    # in process (--workers 1): test_pixel_students checks the split changes nothing
    code, output = _rpd("eval", "--student", str(out), "--env", ENV_ID, "--episodes", "2",
                        "--horizon", "20", "--workers", "1", "--json", str(tmp_path / "eval.json"))
    assert code == 0, output
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["horizon"] == 20
    assert res["episodes"] == 2 and res["env"] == ENV_ID
    assert res["success"] == np.mean([e["success"] for e in res["per_episode"]])
    assert [e["seed"] for e in res["per_episode"]] == [res["seed"], res["seed"] + 1]
    assert res["actions"] == "mean"
    sampled = []
    for i in range(2):
        code, output = _rpd("eval", "--student", str(out), "--env", ENV_ID, "--episodes", "2",
                            "--horizon", "20", "--stochastic", "--workers", "1", "--json",
                            str(tmp_path / f"sampled{i}.json"))
        assert code == 0, output
        sampled.append(json.loads((tmp_path / f"sampled{i}.json").read_text()))
    assert sampled[0]["actions"] == "sampled"
    assert "actions          sampled" in output and "nan" not in output  # no teacher-only rows
    assert sampled[0]["return"] == sampled[1]["return"] != res["return"]  # seeded, not the mean
    code, output = _rpd("eval", "--student", str(out), "--env", ENV_ID, "--episodes", "1",
                        "--workers", "1", "--json", str(tmp_path / "default.json"))
    assert code == 0, output  # no --horizon: the one it was trained with (the task's 50)
    assert json.loads((tmp_path / "default.json").read_text())["horizon"] == 50


def test_evaluation_seeds_stay_in_the_evaluation_range(tmp_path: Path) -> None:
    from rpd.data.seeds import EVALUATION
    from rpd.errors import InputError
    from rpd.pipeline.train import TrainConfig

    TrainConfig(ENV_ID, tmp_path / "r", no_teacher=True, eval_seed=EVALUATION.stop - 10,
                eval_episodes=10)
    with pytest.raises(InputError, match="--eval-seed"):
        TrainConfig(ENV_ID, tmp_path / "r", no_teacher=True,
                    eval_seed=EVALUATION.stop - 5, eval_episodes=10)


@pytest.mark.parametrize("args, message", [
    (["--steps", "64"], "--teacher is required"),
    (["--steps", "64", "--no-teacher", "--cache", "x.npz"], "--cache"),
    (["--steps", "64", "--teacher", "T", "--cache", "missing.npz"], "no such store"),
    (["--steps", "64", "--no-teacher", "--lambda-schedule", "linear"], "--lambda-decay-steps"),
    (["--steps", "0", "--no-teacher"], "--steps 0"),
    (["--steps", "64", "--no-teacher", "--obs", "rgbd"], "--obs 'rgbd'"),
    (["--steps", "64", "--no-teacher", "--teacher-camera-shift", "10"], "--teacher-camera-shift"),
    (["--steps", "64", "--teacher", "T", "--teacher-object-color", "purple"], "purple"),
    (["--steps", "64", "--no-teacher", "--target-kl", "-1"], "--target-kl -1"),
    (["--steps", "64", "--no-teacher", "--seed", "-3"], "--seed -3"),
    (["--steps", "64", "--no-teacher", "--net-arch", "64,0"], "--net-arch 64,0"),
    (["--steps", "64", "--no-teacher", "--net-arch", "-8"], "--net-arch -8"),
    (["--steps", "64", "--no-teacher", "--n-steps", "1", "--envs", "1"], "--n-steps 1 x --envs 1"),
    (["--steps", "64", "--no-teacher", "--label-model-spread", "0"], "--label-model-spread 0"),
    (["--steps", "64", "--no-teacher", "--answer-audit", "-2"], "--answer-audit -2"),
    (["--steps", "64", "--no-teacher", "--label-replay", "-1"], "--label-replay -1"),
    (["--steps", "64", "--no-teacher", "--env-workers", "0"], "--env-workers 0"),
    (["--steps", "64", "--no-teacher", "--checkpoint-every", "0"], "--checkpoint-every 0"),
])
def test_bad_train_input_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = _rpd("train", "--env", ENV_ID, "--out", str(tmp_path / "r"), *args)
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1


def test_existing_out_and_non_run_dirs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    code, output = _rpd("train", "--env", ENV_ID, "--no-teacher", "--steps", "64",
                        "--out", str(tmp_path / "r"))
    assert code == 2 and "--resume" in output
    code, output = _rpd("eval", "--student", str(tmp_path / "r"), "--env", ENV_ID)
    assert code == 2 and "--student" in output


@pytest.mark.slow
def test_teacher_view_changes_reach_the_labeller_and_the_labels_identity(
        teacher_dir: Path, tmp_path: Path) -> None:
    """The robustness runs: the live teacher renders a rotated camera and a repainted object,
    and its labels are stored under a fingerprint of their own (never mixed with others)."""
    from rpd.labels.live import TeacherLabeler

    plain = load_teacher(teacher_dir)
    shifted = load_teacher(teacher_dir).with_view(shift_deg=20, object_color="green")
    assert load_teacher(teacher_dir).with_view().fingerprint == plain.fingerprint
    assert shifted.fingerprint != plain.fingerprint
    with TeacherLabeler(plain, ENV_ID) as a, TeacherLabeler(shifted, ENV_ID) as b:
        view_a, view_b = a.observe()[0], b.observe()[0]
    assert view_a.shape == view_b.shape and np.abs(view_a.astype(int) - view_b).mean() > 5
    out = tmp_path / "run"
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "64",
                        "--teacher-camera-shift", "20", "--teacher-object-color", "green",
                        "--out", str(out))
    assert code == 0, output
    meta = json.loads((out / "student.json").read_text())
    assert meta["teacher"]["fingerprint"] == shifted.fingerprint
    # ... and the checkpoint's own, which the teacher's evaluations name
    assert meta["teacher"]["checkpoint_fingerprint"] == shifted.checkpoint_fingerprint \
        == plain.fingerprint
    assert meta["config"]["teacher_camera_shift"] == 20.0
    assert meta["config"]["teacher_object_color"] == "green"
    assert TeacherStore.open(out / "cache").identity.teacher_fingerprint == shifted.fingerprint
    # the report compares the student with its teacher's success in that view
    ev = tmp_path / "teacher-shift20-green.json"  # not in the shared teacher's folder
    code, output = _rpd("eval", "--teacher", str(teacher_dir), "--env", ENV_ID, "--episodes",
                        "1", "--horizon", "5", "--workers", "1", "--camera-shift", "20",
                        "--object-color", "green", "--json", str(ev))
    assert code == 0, output
    code, output = _rpd("report", str(out), "--teacher-eval", str(ev), "--out",
                        str(tmp_path / "report"))
    assert code == 0, output
    (group,) = json.loads((tmp_path / "report" / "report.json").read_text())["groups"]
    assert group["teacher_eval"]["path"] == str(ev)


def _policy_params(run: Path) -> list[np.ndarray]:
    from rpd.student.rpdppo import RPDPPO

    model = RPDPPO.load(run / "student.zip", device="cpu")
    return [p.detach().numpy().copy() for p in model.policy.parameters()]


@pytest.mark.slow
def test_the_same_seed_repeats_a_run_exactly_and_another_seed_does_not(
        tmp_path: Path) -> None:
    """Two envs in a worker process with a 10-step horizon (so every env auto-resets several
    times): the same --seed gives the same labels, updates and evaluations; another seed does
    not. The scripted teacher labels from the env state (no renders), which keeps three runs
    short."""
    from rpd.teachers.scripted import ScriptedTeacher

    teacher_dir = ScriptedTeacher.build(ENV_ID).save(tmp_path / "scripted")
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / name
        code, output = _rpd("train", "--env", ENV_ID, "--envs", "2", "--env-workers", "1",
                            "--n-steps", "32",
                            "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128",
                            "--eval-episodes", "2", "--net-arch", "32", "--horizon", "10",
                            "--steps", "128", "--seed", seed, "--teacher", str(teacher_dir),
                            "--out", str(out))
        assert code == 0, output
        runs[name] = out
    a, b, c = (_policy_params(runs[n]) for n in "abc")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))
    keys = [_labels(runs[n] / "cache")[0] for n in "abc"]
    np.testing.assert_array_equal(np.sort(keys[0], 0), np.sort(keys[1], 0))
    assert not np.isin(keys[0][:, 0], keys[2][:, 0]).all()
    returns = [[r["return"] for r in _eval_rows(runs[n])] for n in "ab"]
    assert returns[0] == returns[1]


def test_pixel_rows_reads_a_run_dir(rpd_run: Path, tmp_path: Path) -> None:
    """benchmarks/pixel_rows.py, which prints the README's per-run result rows, on a real run."""
    script = Path(__file__).parents[2] / "benchmarks" / "pixel_rows.py"
    run = tmp_path / "PushCube-v1-sparse-rpd-s0"
    shutil.copytree(rpd_run, run)
    (run / "heldout-final.json").write_text(json.dumps(dict(success=0.5, step=128)))

    def rows(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    result = rows(run, "--bin", "64")
    assert result.returncode == 0, result.stderr
    cells = [c.strip() for c in result.stdout.splitlines()[2].strip("|").split("|")]
    name, evals, success, variance, held_out, live = cells
    assert name == "`rpd-s0`"
    assert evals.endswith("(to 128, finished)") and len(evals.split("(")[0].split()) == 2
    # an evaluation writes the scalars of the update it evaluates: both updates are logged
    assert len(variance.split()) == 2
    assert success != "—" and held_out == "50% / —"
    assert live == f"{int(_eval_rows(rpd_run)[-1]['live_teacher_calls']):,}"
    bad = rows(run, tmp_path)
    assert bad.returncode != 0 and str(tmp_path) in bad.stderr and "no eval.csv" in bad.stderr


@pytest.mark.parametrize("damage, message", [
    ("config.json", "config.json is unreadable"),
    ("checkpoints/latest.json", "latest.json is unreadable"),
    ("checkpoints/latest.zip", "latest.zip is not a readable student model"),
    ("eval.csv", "eval.csv is malformed"),
    ("checkpoints/replay.npz", "replay.npz is unreadable"),
    ("checkpoints/train_state.pt", "train_state.pt is unreadable"),
])
def test_resuming_a_damaged_run_is_one_line_exit_2(rpd_run: Path, teacher_dir: Path,
                                                   tmp_path: Path, damage: str,
                                                   message: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    if damage == "eval.csv":
        (run / damage).write_text("step,success,return,wall_time_s,live_teacher_calls\n"
                                  "64,zero,1,2,3\n")
    else:
        (run / damage).write_bytes((run / damage).read_bytes()[:20])  # truncated
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    replay = ["--label-replay", "100"] if "replay" in damage else []  # else it is not read
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume", *replay)
    assert code == 2 and message in output, output
    assert len(output.strip().splitlines()) == 1, output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # untouched


def test_a_truncated_student_zip_is_one_line_exit_2(rpd_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    (run / "student.zip").write_bytes((run / "student.zip").read_bytes()[:1000])
    code, output = _rpd("eval", "--student", str(run), "--env", ENV_ID, "--episodes", "1")
    assert code == 2 and "student.zip is not a readable student model" in output, output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.slow
def test_resume_applies_a_new_live_budget_and_refuses_a_new_grad_clip(
        rpd_run: Path, teacher_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume", "--live-budget", "5")
    assert code == 0, output
    meta = json.loads((run / "student.json").read_text())
    assert meta["config"]["live_budget"] == 5
    assert meta["metrics"]["live_teacher_calls"] == 128 + 5  # one more rollout, 5 labels
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "256",
                        "--out", str(run), "--resume", "--live-budget", "5",
                        "--max-grad-norm", "1.0")
    assert code == 2 and "max_grad_norm" in output, output


def _train_until_it_steps(out: Path, mark: str, *extra: str) -> subprocess.Popen[str]:
    """`rpd train` with 2 envs in a worker process (the default's `GroupedVecEnv`; one process
    per env is SB3's own), returned once its progress bar moves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rpd.cli", "train", "--env", ENV_ID, "--no-teacher",
         "--steps", "100000", "--envs", "2", "--env-workers", "1", "--out", str(out), *extra],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        # a shell's background job (`cmd &`) ignores SIGINT and its children inherit that:
        # restore the default so Python installs its Ctrl-C handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "RPD_TEST_MARK": mark})
    seen = ""
    while "step/s" not in seen:
        char = proc.stderr.read(1)  # type: ignore[union-attr]
        assert char, seen
        seen += char
    return proc


def _processes_marked(mark: str) -> list[int]:
    """Pids of live processes whose environment holds RPD_TEST_MARK=mark."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"RPD_TEST_MARK={mark}".encode() in environ.read_bytes():
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


def _wait_until_gone(pids: list[int]) -> None:
    """Wait until each process has exited: its pidfd turns readable then (the timeout is only
    a safety net against a hang)."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        try:
            select.select([fd], [], [], 300)
        finally:
            os.close(fd)


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_a_killed_run_leaves_no_workers(tmp_path: Path) -> None:
    proc = _train_until_it_steps(tmp_path / "a", "ctrl-c")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in err, err[err.find("Traceback"):][:3000]  # once under load
    assert err.strip().splitlines()[-1].startswith(
        "rpd: interrupted; finished work is kept"), err[-1000:]
    assert "--resume" in err
    proc = _train_until_it_steps(tmp_path / "b", "kill")
    workers = _processes_marked("kill")
    assert len(workers) >= 2  # the run and its env worker
    proc.kill()  # SIGKILL: no chance to close the workers itself
    proc.wait(timeout=60)
    _wait_until_gone(workers)  # the parent-death signal ends them
    assert _processes_marked("kill") == []  # the env workers died with it


@pytest.mark.slow
def test_sigterm_is_an_interrupt_and_checkpoint_every_keeps_the_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    latest = run / "checkpoints" / "latest.json"
    proc = _train_until_it_steps(run, "sigterm", "--checkpoint-every", "256")
    deadline = time.time() + 120
    while not latest.is_file() and time.time() < deadline:
        time.sleep(0.2)
    workers = _processes_marked("sigterm")
    os.killpg(proc.pid, signal.SIGTERM)  # a scheduler's stop: the whole group, workers too
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert proc.wait(timeout=60) == 130
    assert "Traceback" not in err, err[err.find("Traceback"):][:3000]
    assert err.strip().splitlines()[-1].startswith(
        "rpd: interrupted; finished work is kept"), err[-1000:]
    _wait_until_gone(workers)
    assert _processes_marked("sigterm") == []  # the workers were closed, not orphaned
    saved = json.loads(latest.read_text())["num_timesteps"]
    assert saved >= 256 and _eval_rows(run) == []  # checkpointed before any evaluation
    code, output = _rpd("train", "--env", ENV_ID, "--no-teacher", "--steps", str(saved + 128),
                        "--envs", "2", "--env-workers", "1", "--eval-episodes", "2",
                        "--out", str(run), "--resume")
    assert code == 0, output
    assert [int(r["step"]) for r in _eval_rows(run)] == [saved + 128]


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
        rpd_run: Path, teacher_dir: Path, tmp_path: Path) -> None:
    """The checkpoint is first written to a temporary file; here that file is /dev/full, whose
    every write fails with ENOSPC (a real full-disk error from the kernel)."""
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    good = (run / "checkpoints" / "latest.zip").read_bytes()
    (run / "checkpoints" / ".latest.tmp.zip").symlink_to("/dev/full")
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume")
    assert code == 2, output
    last = output.strip().splitlines()[-1]  # after the progress bar: the one error line
    assert last.startswith("rpd: error: writing the checkpoint of step 192"), output
    assert "No space left on device" in last and "last good checkpoint" in last
    assert "--resume" in last and "Traceback" not in output
    assert (run / "checkpoints" / "latest.zip").read_bytes() == good
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["num_timesteps"] == 128
    # after freeing space the run resumes from that checkpoint
    (run / "checkpoints" / ".latest.tmp.zip").unlink(missing_ok=True)
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume")
    assert code == 0, output
    assert [int(r["step"]) for r in _eval_rows(run)] == [64, 128, 192]


@pytest.mark.slow
def test_student_zip_is_replaced_atomically(rpd_run: Path, teacher_dir: Path,
                                            tmp_path: Path) -> None:
    """student.zip is written to a temporary file first: when that write fails (here: the
    temporary file is /dev/full), the previous student.zip is still whole."""
    run = tmp_path / "run"
    shutil.copytree(rpd_run, run)
    before = (run / "student.zip").read_bytes()
    (run / ".student.zip.tmp.zip").symlink_to("/dev/full")
    code, output = _rpd("train", *TINY, "--teacher", str(teacher_dir), "--steps", "192",
                        "--out", str(run), "--resume")
    assert code == 2 and "No space left on device" in output.strip().splitlines()[-1], output
    assert (run / "student.zip").read_bytes() == before


@pytest.mark.slow
def test_wandb_mirrors_the_runs_scalars_and_config_offline(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--wandb` in wandb's offline mode (no network): the run's TensorBoard scalars and its
    config reach the wandb run stored in OUT/wandb, under an id a resume would reuse."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    code, output = _rpd("train", *TINY, "--no-teacher", "--steps", "64", "--wandb",
                        "--wandb-project", "rpd-test", "--out", str(out))
    assert code == 0, output
    runs = list((out / "wandb").glob("offline-run-*-rpd-*"))
    assert len(runs) == 1
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"eval/success", b"rollout/", b"rpd-test", b"wandb_project"):
        assert key in record, key
    assert json.loads((out / "config.json").read_text())["wandb"] is True
