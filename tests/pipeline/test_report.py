"""`rpd report`: real tiny `rpd train` runs end to end, and the aggregation math on
hand-written eval.csv files whose expected numbers are computed by hand below."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.pipeline.report import align_curves, iqm_interval, rewound_rows, spread, steps_to_threshold

ENV = "PushCube-v1"
# one in-process env, 4 rollouts of 64 steps, an eval every 2nd: a few seconds per run
TINY = ["--env", ENV, "--steps", "256", "--envs", "1", "--n-steps", "64", "--batch-size", "32",
        "--n-epochs", "2", "--eval-every", "128", "--eval-episodes", "1", "--net-arch", "32"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rpd(*args: str | Path):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _last_row(run: Path) -> dict[str, float]:
    with open(run / "eval.csv") as f:
        return {k: float(v) for k, v in list(csv.DictReader(f))[-1].items()}


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A cnn-tiny teacher (no proprio, 32x32 render camera) evaluated by `rpd eval --teacher`,
    two plain-PPO seeds and one RPD seed (live labels, --live-budget 8 per rollout)."""
    from rpd.data.views import CameraSpec
    from rpd.teachers.base import TeacherSpec
    from rpd.teachers.simple import TinyCNNTeacher

    root = tmp_path_factory.mktemp("report")
    spec = TeacherSpec(camera=CameraSpec("render", 32, 32), control_mode="pd_ee_delta_pose",
                       action_dim=7, chunk_size=4, proprio_dim=0, tasks={ENV: "push the cube"})
    stats = {"q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0]}
    teacher = TinyCNNTeacher(spec, {"seed": 3, "channels": [8, 16, 16], "hidden": 64},
                             stats).save(root / "teacher")
    runs = dict(teacher=teacher, ppo0=root / "ppo-s0", ppo1=root / "ppo-s1", rpd0=root / "rpd-s0")
    for name, extra in (("rpd0", ["--teacher", teacher, "--live-budget", "8", "--seed", "0"]),
                        ("ppo0", ["--no-teacher", "--seed", "0"]),
                        ("ppo1", ["--no-teacher", "--seed", "1"])):
        r = _rpd("train", *TINY, *extra, "--out", runs[name])
        assert r.exit_code == 0, r.output
    # one worker runs in this process, whose renderer is already warm from the RPD run's labeller
    r = _rpd("eval", "--teacher", teacher, "--env", ENV, "--episodes", "1", "--horizon", "5",
             "--workers", "1")
    assert r.exit_code == 0, r.output
    return runs


@pytest.mark.slow
def test_the_report_shows_held_out_success_of_the_final_and_the_best_policy(
        real_runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "rpd-s0"
    shutil.copytree(real_runs["rpd0"], run)
    r = _rpd("eval", "--student", run, "--env", ENV, "--held-out", "--episodes", "2",
             "--workers", "1")
    assert r.exit_code == 0, r.output
    held = json.loads((run / "eval" / f"{ENV}-h50-heldout.json").read_text())
    assert held["seed_range"] == "held-out" and [e["seed"] for e in held["per_episode"]] == [
        300_000_000, 300_000_001]
    r = _rpd("report", run, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    group = json.loads((tmp_path / "r" / "report.json").read_text())["groups"][0]
    assert group["heldout_success"]["per_seed"] == [held["success"]]
    md = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| RPD"))
    assert "(1/1 seeds, 2 ep)" in row.split("|")[3]
    assert row.split("|")[4].strip() == f"{held['success']:.2f} (one seed, no interval)"
    assert group["best_checkpoint"]["n"] == 0 and "Best checkpoint" not in md
    # the policy of the best evaluation, scored held out, gets a table of its own
    r = _rpd("eval", "--student", run, "--env", ENV, "--held-out", "--episodes", "2",
             "--workers", "1", "--checkpoint", "best")
    assert r.exit_code == 0, r.output
    best = json.loads((run / "eval" / f"{ENV}-h50-best-heldout.json").read_text())
    with open(run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    first_max = max(rows, key=lambda row: float(row["success"]))  # the first of a tie
    assert best["step"] == int(float(first_max["step"]))
    assert _rpd("report", run, "--out", tmp_path / "r1").exit_code == 0
    group = json.loads((tmp_path / "r1" / "report.json").read_text())["groups"][0]
    assert group["best_checkpoint"]["heldout_success"]["mean"] == best["success"]
    assert group["best_checkpoint"]["step"]["mean"] == best["step"]
    md = (tmp_path / "r1" / "report.md").read_text()
    row = next(line for line in md.split("Best checkpoint")[1].splitlines()
               if line.startswith("| RPD"))
    assert row.split("|")[3].strip() == f"{best['step']:,}"
    assert row.split("|")[4].strip() == f"{best['success']:.2f} (2 ep)"
    # a held-out file of another step (a run continued since) is left out
    for name in (f"{ENV}-h50-heldout.json", f"{ENV}-h50-best-heldout.json"):
        moved = json.loads((run / "eval" / name).read_text())
        moved["step"] += 1
        (run / "eval" / name).write_text(json.dumps(moved))
    assert _rpd("report", run, "--out", tmp_path / "r2").exit_code == 0
    group = json.loads((tmp_path / "r2" / "report.json").read_text())["groups"][0]
    assert group["heldout_success"]["n"] == 0 and group["best_checkpoint"]["n"] == 0


def test_report_of_real_runs(real_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = _rpd("report", real_runs["ppo0"], real_runs["ppo1"], real_runs["rpd0"], "--out", out)
    assert r.exit_code == 0, r.output
    png = out / f"{ENV}.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    report = json.loads((out / "report.json").read_text())
    groups = {g["method"]: g for g in report["groups"]}
    assert set(groups) == {"ppo", "rpd"}
    ppo, rpd = groups["ppo"], groups["rpd"]
    assert ppo["n_seeds"] == 2 and ppo["seeds"] == [0, 1] and ppo["finished"] == 2
    assert rpd["n_seeds"] == 1 and ppo["teacher_eval"] is None
    finals = [_last_row(real_runs[k])["success"] for k in ("ppo0", "ppo1")]
    assert ppo["final_success"]["mean"] == pytest.approx(np.mean(finals))
    assert ppo["final_step"]["mean"] == 256 and ppo["curve"]["steps"] == [128, 256]
    # 4 rollouts x at most 8 live calls, all states novel: 32 calls in 256 steps
    last = _last_row(real_runs["rpd0"])
    assert last["live_teacher_calls"] == 32
    assert rpd["live_teacher_calls_per_step"]["mean"] == pytest.approx(32 / 256)
    assert ppo["live_teacher_calls_per_step"]["mean"] == 0
    student = json.loads((real_runs["rpd0"] / "student.json").read_text())
    assert rpd["steps_per_s"]["mean"] == pytest.approx(student["metrics"]["train_steps_per_s"])
    assert rpd["teacher_fingerprint"] == student["teacher"]["fingerprint"]
    # the teacher's own eval JSON, found in TEACHER/eval/ through the run's config.json
    ev = json.loads((real_runs["teacher"] / "eval" / f"{ENV}-h5.json").read_text())
    assert rpd["teacher_eval"]["success"] == ev["success_rate"]
    assert rpd["teacher_eval"]["horizon"] == 5
    md = (out / "report.md").read_text()
    assert f"![{ENV} learning curves]({ENV}.png)" in md
    rpd_row = next(line for line in md.splitlines() if line.startswith("| RPD"))
    cells = [c.strip() for c in rpd_row.strip("|").split("|")]
    assert cells[1] == f"{ev['success_rate']:.2f} (h5, 1 ep)"
    assert cells[2] == cells[3] == "-"  # no held-out evaluation yet, so no IQM either
    assert cells[8] == "0.125" and cells[-1] == "1"
    # the same eval JSON given explicitly; and one of another task is refused
    r = _rpd("report", real_runs["rpd0"], "--out", tmp_path / "r2", "--teacher-eval",
             real_runs["teacher"] / "eval" / f"{ENV}-h5.json", "--band", "std")
    assert r.exit_code == 0, r.output
    other = tmp_path / "PickCube-v1-h5.json"
    other.write_text(json.dumps(ev | dict(env_id="PickCube-v1")))
    r = _rpd("report", real_runs["rpd0"], "--out", tmp_path / "r3", "--teacher-eval", other)
    assert r.exit_code == 2 and "no run is on that task" in r.stderr
    assert not (tmp_path / "r3").exists()


# ---------------------------------------------------------------- hand-written runs


def _fake_run(path: Path, rows: list[tuple[int, float, float, float, int]], **config) -> Path:
    """A run dir with config.json and eval.csv (step, success, return, wall_time_s,
    live_teacher_calls) only, as an unfinished `rpd train` run leaves it."""
    path.mkdir(parents=True)
    cfg = dict(env_id=ENV, no_teacher=True, teacher=None, reward="dense", seed=0,
               eval_episodes=10, horizon=None, lam=1.0) | config
    (path / "config.json").write_text(json.dumps(cfg))
    with open(path / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "success", "return", "wall_time_s", "live_teacher_calls"])
        w.writerows(rows)
    return path


def _teacher_eval(teacher: Path, horizon: int, success: float, fingerprint: str = "f") -> None:
    (teacher / "eval").mkdir(parents=True, exist_ok=True)
    (teacher / "eval" / f"{ENV}-h{horizon}.json").write_text(json.dumps(dict(
        env_id=ENV, teacher=str(teacher), fingerprint=fingerprint, horizon=horizon,
        episodes=20, success_rate=success, success_at_end=success, mean_return=1.0,
        mean_length=40.0, camera_shift=0.0)))


def test_the_best_checkpoint_is_the_first_best_evaluation_of_the_surviving_rows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`rpd train` keeps the first of tied best evaluations; a resumed run's rewound rows do
    not count. The best policy's held-out file counts only when it scores that step."""
    # 300 -> 0.9 is superseded by the resumed run's 300 -> 0.5; 200 and 400 tie at 0.8
    run = _fake_run(tmp_path / "run", [(100, 0.2, 1, 10, 0), (200, 0.8, 2, 20, 0),
                                       (300, 0.9, 3, 30, 0), (300, 0.5, 3, 35, 0),
                                       (400, 0.8, 4, 40, 0)])
    (run / "student.json").write_text(json.dumps({"metrics": {"steps": 400}}))
    (run / "eval").mkdir()
    best = dict(step=200, success=0.7, episodes=50)
    (run / "eval" / f"{ENV}-h50-best-heldout.json").write_text(json.dumps(best))
    r = _rpd("report", run, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    b = json.loads((tmp_path / "r" / "report.json").read_text())["groups"][0]["best_checkpoint"]
    assert (b["step"]["mean"], b["eval_success"]["mean"], b["heldout_success"]["mean"]) == (
        200, 0.8, 0.7)
    assert "| PPO, dense | 0.80 | 200 | 0.70 (50 ep) | 0.70 (one seed, no interval) | 1/1 |" in (
        tmp_path / "r" / "report.md").read_text()
    best["step"] = 300  # the superseded row's policy: left out, with a warning naming the fix
    (run / "eval" / f"{ENV}-h50-best-heldout.json").write_text(json.dumps(best))
    with caplog.at_level("WARNING", logger="rpd.pipeline.report"):
        assert _rpd("report", run, "--out", tmp_path / "r2").exit_code == 0
    b = json.loads((tmp_path / "r2" / "report.json").read_text())["groups"][0]["best_checkpoint"]
    assert b["n"] == 0 and "Best checkpoint" not in (tmp_path / "r2" / "report.md").read_text()
    assert f"--env {ENV} --checkpoint best --held-out" in caplog.text


def test_pure_math_by_hand() -> None:
    assert steps_to_threshold([100, 200, 300], [0.1, 0.6, 0.9], 0.6) == 200
    assert steps_to_threshold([100, 200, 300], [0.1, 0.59, 0.7], 0.8) is None
    assert steps_to_threshold([10], [0.8], 0.8) == 10
    s = spread([0.9, 0.7, None])
    assert (s["mean"], s["min"], s["max"], s["n"]) == (pytest.approx(0.8), 0.7, 0.9, 2)
    assert s["std"] == pytest.approx(0.1)  # population std of {0.7, 0.9}
    assert spread([None])["mean"] is None
    # seeds evaluated at different steps: grid = union of steps inside [150, 300], each seed
    # carrying its latest eval forward
    grid, values = align_curves([([100, 200, 300], [0.1, 0.2, 0.3]),
                                 ([150, 250, 350], [0.5, 0.6, 0.7])])
    assert grid.tolist() == [150, 200, 250, 300]
    assert values.tolist() == [[0.1, 0.2, 0.2, 0.3], [0.5, 0.5, 0.6, 0.6]]
    # a run resumed from its checkpoint at step 200 evaluated 300 again: the later rows win
    rows = np.array([[100, 0.1], [200, 0.2], [300, 0.3], [300, 0.4], [400, 0.5]])
    assert rewound_rows(rows).tolist() == [[100, 0.1], [200, 0.2], [300, 0.4], [400, 0.5]]
    rows = np.array([[100, 0.1], [200, 0.2], [300, 0.3], [200, 0.25], [300, 0.35]])
    assert rewound_rows(rows).tolist() == [[100, 0.1], [200, 0.25], [300, 0.35]]


def test_the_interquartile_mean_drops_the_outer_quarters_and_its_interval_brackets_it() -> None:
    # IQM of 8 seeds: the middle four (0.5, 0.6, 0.7, 0.8), whatever the failed seeds scored
    scores = [0.0, 0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    d = iqm_interval([*scores, None])
    assert d["iqm"] == pytest.approx(0.65) and d["n"] == 8
    assert d["low"] < d["iqm"] < d["high"] and 0.0 <= d["low"] and d["high"] <= 1.0
    state = np.random.get_state()
    assert iqm_interval(scores) == d  # seeded bootstrap: a regenerated report is the same
    after = np.random.get_state()  # ... and the caller's global generator is left as it was
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    # with fewer than four seeds nothing is trimmed: the IQM is the mean
    assert iqm_interval([0.0, 0.6, 0.9])["iqm"] == pytest.approx(0.5)
    assert iqm_interval([0.2, float("nan"), 0.4])["n"] == 2  # a NaN is no seed's score
    # seeds that agree leave nothing to resample: the interval is the point
    same = iqm_interval([0.74, 0.74, 0.74])
    assert same["low"] == same["high"] == pytest.approx(0.74)
    assert iqm_interval([0.3]) == dict(iqm=0.3, low=None, high=None, n=1)
    assert iqm_interval([None])["iqm"] is None


def test_aggregation_of_hand_written_runs(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    _teacher_eval(teacher, 100, 0.15)
    _teacher_eval(teacher, 50, 0.05)  # the student's horizon (task default 50) wins
    a = _fake_run(tmp_path / "a", [(100, 0.2, 1, 10, 50), (200, 0.6, 2, 20, 100),
                                   (300, 0.7, 3, 30, 150), (400, 0.9, 4, 40, 200)],
                  no_teacher=False, teacher=str(teacher))
    b = _fake_run(tmp_path / "b", [(100, 0.0, 1, 15, 25), (200, 0.4, 2, 30, 50),
                                   (300, 0.9, 3, 45, 75), (400, 0.7, 4, 60, 100)],
                  no_teacher=False, teacher=str(teacher), seed=1)
    c = _fake_run(tmp_path / "c", [(100, 0.1, 1, 5, 0), (200, 0.2, 1, 10, 0)])
    d = _fake_run(tmp_path / "d", [(100, 0.0, 1, 5, 0), (200, 1.0, 1, 10, 0)], ent_coef=0.01)
    # λ means nothing to plain PPO: a run that differs only in it is another seed of c
    e = _fake_run(tmp_path / "e", [(100, 0.3, 1, 5, 0), (200, 0.2, 1, 10, 0)], lam=0.143,
                  seed=1)
    out = tmp_path / "out"
    r = _rpd("report", a, b, c, d, e, "--out", out)
    assert r.exit_code == 0, r.output
    groups = json.loads((out / "report.json").read_text())["groups"]
    assert [(g["method"], g["variant"], g["seeds"]) for g in groups] == [
        ("ppo", {"ent_coef": 0.01}, [0]), ("ppo", {"ent_coef": None}, [0, 1]), ("rpd", {}, [0, 1])]
    rpd = groups[2]
    # mean curve 0.1, 0.5, 0.8, 0.8 -> 0.6 first reached at 300 (seeds: 200 and 300),
    # 0.8 at 300 (seeds: 400 and 300)
    assert rpd["curve"]["mean"] == pytest.approx([0.1, 0.5, 0.8, 0.8])
    assert rpd["steps_to"]["0.6"] == dict(mean_curve=300, per_seed=[200, 300])
    assert rpd["steps_to"]["0.8"] == dict(mean_curve=300, per_seed=[400, 300])
    fs = rpd["final_success"]
    assert (fs["mean"], fs["std"], fs["min"], fs["max"]) == pytest.approx((0.8, 0.1, 0.7, 0.9))
    # live calls per step: 200/400 and 100/400; wall-clock: last rows 40 and 60 s
    assert rpd["live_teacher_calls_per_step"]["mean"] == pytest.approx(0.375)
    assert rpd["wall_time_s"]["mean"] == pytest.approx(50.0)
    assert rpd["steps_per_s"]["mean"] is None and rpd["finished"] == 0
    assert rpd["teacher_eval"]["success"] == 0.05 and rpd["teacher_eval"]["horizon"] == 50
    assert groups[0]["steps_to"]["0.8"]["mean_curve"] == 200
    assert groups[1]["steps_to"]["0.6"] == dict(mean_curve=None, per_seed=[None, None])
    assert groups[1]["curve"]["mean"] == pytest.approx([0.2, 0.2])
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| RPD"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == ["RPD (teacher), dense", "0.05 (h50, 20 ep)", "-", "-",
                         "0.80 ± 0.10 [0.70, 0.90]", "400 ± 0 [400, 400]",
                         "300 (2/2 seeds)", "300 (2/2 seeds)"]
    assert cells[8] == "0.375 ± 0.125 [0.250, 0.500]" and cells[9] == "0.8 min"
    assert cells[-1] == "2 (2 unfinished)"
    assert "| PPO, dense, ent coef None |" in md and "not reached (0/2 seeds)" in md
    assert (out / f"{ENV}.png").stat().st_size > 10_000


def test_a_changed_teacher_view_splits_rpd_runs(tmp_path: Path) -> None:
    """Students trained with a shifted teacher camera are not repeats of the plain ones; a
    config from before the option existed (no key) is the unchanged view."""
    rows = [(100, 0.5, 1, 5, 10), (200, 0.6, 1, 10, 20)]
    plain = _fake_run(tmp_path / "a", rows, no_teacher=False, teacher="t")
    old = _fake_run(tmp_path / "b", rows, no_teacher=False, teacher="t", seed=1)
    shifted = _fake_run(tmp_path / "c", rows, no_teacher=False, teacher="t",
                        teacher_camera_shift=15.0)
    for cfg_path, shift in ((plain / "config.json", 0.0), (old / "config.json", None)):
        cfg = json.loads(cfg_path.read_text())
        if shift is not None:
            cfg["teacher_camera_shift"] = shift
        cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = _rpd("report", plain, old, shifted, "--out", out)
    assert r.exit_code == 0, r.output
    groups = json.loads((out / "report.json").read_text())["groups"]
    assert [(g["variant"], g["seeds"]) for g in groups] == [
        ({"teacher_camera_shift": 0.0}, [0, 1]), ({"teacher_camera_shift": 15.0}, [0])]


def test_each_teacher_view_is_compared_with_the_teachers_success_in_that_view(
        tmp_path: Path) -> None:
    """A student of a shifted (or recoloured) teacher gets that teacher's success in the view
    it saw, found in the teacher's folder or given; a view no run saw is refused."""
    teacher = tmp_path / "teacher"
    _teacher_eval(teacher, 50, 0.40)
    views = {"-shift15": dict(camera_shift=15.0), "-green": dict(object_color="green")}
    for suffix, view in views.items():
        path = teacher / "eval" / f"{ENV}-h50{suffix}.json"
        d = json.loads((teacher / "eval" / f"{ENV}-h50.json").read_text())
        path.write_text(json.dumps(d | view | dict(success_rate=0.10 if suffix[1] == "s"
                                                   else 0.20)))
    rows = [(100, 0.5, 1, 5, 10), (200, 0.6, 1, 10, 20)]
    runs = [_fake_run(tmp_path / "plain", rows, no_teacher=False, teacher=str(teacher),
                      teacher_camera_shift=0.0),
            _fake_run(tmp_path / "shift", rows, no_teacher=False, teacher=str(teacher),
                      teacher_camera_shift=15.0),
            _fake_run(tmp_path / "green", rows, no_teacher=False, teacher=str(teacher),
                      teacher_camera_shift=0.0, teacher_object_color="green")]
    # a shifted run from before student.json named the checkpoint's own fingerprint: its
    # (viewed) fingerprint is no evaluation's, so the teacher's path decides
    (runs[1] / "student.json").write_text(json.dumps(dict(
        teacher=dict(path=str(teacher), kind="cnn-tiny", fingerprint="viewed"),
        metrics=dict(steps=200))))
    found = tmp_path / "found"
    assert _rpd("report", *runs, "--out", found).exit_code == 0
    given = tmp_path / "given"
    evals = [a for s in ("", "-shift15", "-green")
             for a in ("--teacher-eval", teacher / "eval" / f"{ENV}-h50{s}.json")]
    r = _rpd("report", *runs, "--out", given, *evals)
    assert r.exit_code == 0, r.output
    for out in (found, given):
        groups = json.loads((out / "report.json").read_text())["groups"]
        by_view = {(g["variant"].get("teacher_camera_shift"),
                    g["variant"].get("teacher_object_color")): g["teacher_eval"]["success"]
                   for g in groups}
        assert by_view == {(0.0, None): 0.40, (15.0, None): 0.10, (0.0, "green"): 0.20}
    # the shifted evaluation alone fits no run of the unshifted view
    r = _rpd("report", runs[0], "--out", tmp_path / "bad", "--teacher-eval",
             teacher / "eval" / f"{ENV}-h50-shift15.json")
    assert r.exit_code == 2 and "camera +15°" in r.stderr and "view" in r.stderr, r.output
    assert not (tmp_path / "bad").exists()


def test_label_replay_splits_rpd_runs_and_an_older_config_means_none(tmp_path: Path) -> None:
    rows = [(100, 0.5, 1, 5, 10), (200, 0.6, 1, 10, 20)]
    plain = _fake_run(tmp_path / "a", rows, no_teacher=False, teacher="t", label_replay=0)
    old = _fake_run(tmp_path / "b", rows, no_teacher=False, teacher="t", seed=1)
    replay = _fake_run(tmp_path / "c", rows, no_teacher=False, teacher="t", label_replay=20000)
    ppo = _fake_run(tmp_path / "d", rows, label_replay=20000)  # PPO ignores it
    ppo_old = _fake_run(tmp_path / "e", rows, seed=1)
    cfg = json.loads((old / "config.json").read_text())
    cfg.pop("label_replay", None)
    (old / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = _rpd("report", plain, old, replay, ppo, ppo_old, "--out", out)
    assert r.exit_code == 0, r.output
    groups = json.loads((out / "report.json").read_text())["groups"]
    assert [(g["method"], g["variant"], g["seeds"]) for g in groups] == [
        ("ppo", {}, [0, 1]), ("rpd", {"label_replay": 0}, [0, 1]),
        ("rpd", {"label_replay": 20000}, [0])]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such directory"),
    ("no_config", "not an `rpd train` run directory"),
    ("no_csv", "no eval.csv"),
    ("header_only", "has no evaluations yet"),
    ("empty_file", "lacks column(s)"),
    ("not_numeric", "is not numeric"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, case: str,
                                                  message: str) -> None:
    good = _fake_run(tmp_path / "good", [(100, 0.5, 1, 10, 0)])
    bad = tmp_path / "bad"
    if case != "missing":
        _fake_run(bad, [(100, 0.5, 1, 10, 0)])
    if case == "no_config":
        (bad / "config.json").unlink()
    elif case == "no_csv":
        (bad / "eval.csv").unlink()
    elif case == "header_only":
        (bad / "eval.csv").write_text("step,success,return,wall_time_s,live_teacher_calls\n")
    elif case == "empty_file":
        (bad / "eval.csv").write_text("")
    elif case == "not_numeric":
        with open(bad / "eval.csv", "a") as f:
            f.write("200,oops,1,2,0\n")
    out = tmp_path / "out"
    r = _rpd("report", good, bad, "--out", out)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and str(bad) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_run_dry_run_plans_resumes_and_skips(tmp_path: Path) -> None:
    """`rpd run --dry-run`: the stage commands, with finished stages skipped and an unfinished
    run resumed (nothing is run or written)."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "teacher.json").write_text("{}")
    runs = tmp_path / "out" / "runs"
    _fake_run(runs / f"{ENV}-sparse-rpd-s0", [(100, 0.5, 1, 10, 0)])
    (runs / f"{ENV}-sparse-rpd-s0" / "student.json").write_text(
        json.dumps(dict(metrics=dict(steps=1000))))
    _fake_run(runs / f"{ENV}-sparse-ppo-s0", [(100, 0.5, 1, 10, 0)])  # interrupted
    r = _rpd("run", "--env", ENV, "--reward", "sparse", "--steps", "1000", "--seeds", "0,1",
             "--teacher", teacher, "--live-budget", "5", "--teacher-horizon", "100",
             "--out", tmp_path / "out", "--dry-run")
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    stages = [line.split("]")[0].lstrip("[") for line in out]
    assert stages == ["demos", "fast-demos", "teacher", "teacher-eval", "cache", "train-rpd-s0",
                      "train-ppo-s0", "train-rpd-s1", "train-ppo-s1", "heldout-rpd-s0",
                      "heldout-ppo-s0", "heldout-rpd-s1", "heldout-ppo-s1", "report"]
    assert all("skipped" in out[i] for i in (0, 1, 2, 4, 5))
    assert f"--teacher {teacher}" in out[3] and "--horizon 100" in out[3]
    assert out[6].endswith("--no-teacher --resume") and "--live-budget" not in out[6]
    assert "--live-budget 5" in out[7] and "--reward sparse" in out[7]
    assert "--lambda-schedule cosine --lambda-decay-steps 600" in out[7]
    assert "--resume" not in out[7] and not (tmp_path / "out" / "run.log").exists()
