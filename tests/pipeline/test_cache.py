"""`rpd cache` end to end: a real tiny teacher, real ManiSkill envs, a real dask LocalCluster
on loopback, a real Zarr store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.seeds import CACHE
from rpd.data.store import TeacherStore
from rpd.data.views import CameraSpec
from rpd.labels.live import TeacherLabeler, label_env_states
from rpd.labels.lookup import TeacherCache
from rpd.teachers.base import TeacherBatch, TeacherSpec, load_teacher

ENV = "PickCube-v1"


def tiny_teacher(seed: int = 3) -> object:
    from rpd.teachers.simple import TinyCNNTeacher

    spec = TeacherSpec(camera=CameraSpec("render", 64, 64), control_mode="pd_ee_delta_pose",
                       action_dim=7, chunk_size=4, proprio_dim=9,
                       tasks={ENV: "pick up the red cube and move it to the goal"})
    stats = {"q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0]}
    return TinyCNNTeacher(spec, {"seed": seed, "channels": [8, 16, 16], "hidden": 64}, stats)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_teacher().save(tmp_path_factory.mktemp("teacher") / "cnn-tiny")


@pytest.fixture(scope="module")
def demo_file(pickcube_demos: Path) -> Path:
    return pickcube_demos / "trajectory.none.pd_ee_delta_pose.physx_cpu.h5"


def test_cnn_tiny_teacher_meets_the_interface(tmp_path: Path) -> None:
    teacher = tiny_teacher()
    rng = np.random.default_rng(0)
    batch = TeacherBatch(images=rng.integers(0, 255, (3, 80, 96, 3), dtype=np.uint8),
                         instructions=["x"] * 3, proprio=rng.normal(size=(3, 9)).astype("f4"))
    chunk = teacher.act_chunk(batch)
    assert chunk.shape == (3, 4, 7) and chunk.dtype == np.float32
    assert (chunk[..., :6] >= -0.5).all() and (chunk[..., :6] <= 0.5).all()  # q01/q99 units
    assert np.abs(chunk[0] - chunk[1]).max() > 1e-4  # depends on its input
    loaded = load_teacher(teacher.save(tmp_path / "t"))
    assert loaded.kind == "cnn-tiny" and loaded.fingerprint == teacher.fingerprint
    np.testing.assert_array_equal(loaded.act(batch), teacher.act(batch))
    assert tiny_teacher(seed=4).fingerprint != teacher.fingerprint
    with pytest.raises(ValueError, match="proprio"):
        teacher.act(TeacherBatch(images=batch.images, instructions=batch.instructions))


@pytest.mark.slow
def test_relabelling_rollout_states_reproduces_the_rollout_labels() -> None:
    teacher = tiny_teacher()
    with TeacherLabeler(teacher, ENV, batch_size=4) as labeler:
        ep = labeler.rollout(seed=5, steps=6, noise=0.2)
    assert ep["env_state"].shape == (6, 70) and ep["obs"].shape == (6, 42)
    actions = label_env_states(teacher, ENV, ep["env_state"], batch_size=4)
    np.testing.assert_allclose(actions, ep["teacher_action"], atol=1e-4)
    with TeacherLabeler(teacher, ENV) as labeler:
        _, obs = labeler.label_with_obs(ep["env_state"])
    np.testing.assert_allclose(obs, ep["obs"], atol=1e-4)


@pytest.mark.slow
def test_cache_cli_with_a_local_cluster(teacher_dir: Path, demo_file: Path,
                                        tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["cache", "--teacher", str(teacher_dir), "--env", ENV, "--out", str(store),
            "--demos", str(demo_file), "--rollouts", "1", "--noise", "0.3", "--horizon", "8",
            "--workers", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "labelled 4 episodes" in result.stdout

    demo_meta = json.loads(demo_file.with_suffix(".json").read_text())
    demo_states = sum(ep["elapsed_steps"] + 1 for ep in demo_meta["episodes"])
    info = CliRunner().invoke(main, ["cache", "info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.stdout)
    assert summary["by_source"] == {"demo": demo_states, "teacher-rollout": 8,
                                    "noisy-rollout": 8, "live": 0}
    assert summary["teacher_fingerprint"] == load_teacher(teacher_dir).fingerprint
    assert summary["env_id"] == ENV and summary["units"] == 4 and summary["key_dim"] == 42
    text = CliRunner().invoke(main, ["cache", "info", str(store)]).stdout
    assert f"entries                {demo_states + 16}" in text and "cnn-tiny" in text

    # The stored labels are what the teacher says about the stored states.
    rows = TeacherStore.open(store).read()
    demo = rows.source == 0
    assert sorted(set(rows.episode[demo].tolist())) == [e["episode_id"]
                                                        for e in demo_meta["episodes"]]
    teacher = load_teacher(teacher_dir)
    pick = np.flatnonzero(demo)[::25]
    np.testing.assert_allclose(label_env_states(teacher, ENV, rows.env_state[pick]),
                               rows.teacher_action[pick], atol=1e-4)

    # Re-running resumes: nothing left to do.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "labelled 0 episodes" in again.stdout and "4 already in the store" in again.stdout

    # Another teacher is refused with one line and exit code 2.
    other = tiny_teacher(seed=9).save(tmp_path / "other")
    refused = CliRunner().invoke(main, ["cache", "--teacher", str(other), "--env", ENV,
                                        "--out", str(store), "--rollouts", "1"])
    assert refused.exit_code == 2
    assert "teacher fingerprint" in refused.stderr and "--allow-mismatch" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # ... and so by `rpd train`, which offers no --allow-mismatch: its message says what to do
    refused = CliRunner().invoke(main, ["train", "--env", ENV, "--teacher", str(other),
                                        "--cache", str(store), "--steps", "64",
                                        "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "teacher fingerprint" in refused.stderr
    assert "--allow-mismatch" not in refused.stderr and "`rpd cache`" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()

    # The trainer's view: stored keys hit with the stored actions; live labels write through.
    cache = TeacherCache.open(store, teacher, env_id=ENV)
    actions, hit = cache.lookup(rows.key)
    assert hit.all()
    np.testing.assert_allclose(actions, rows.teacher_action)
    _, far = cache.lookup(rows.key[:3] + 50.0)
    assert not far.any()
    live, obs = cache.label_live_with_obs(rows.env_state[:3])
    assert cache.insert(None, obs, rows.env_state[:3], live) == 3
    cache.close()
    reopened = TeacherCache.open(store, teacher)
    assert len(reopened) == len(rows) + 3
    assert json.loads(CliRunner().invoke(main, ["cache", "info", str(store), "--json"]).stdout
                      )["by_source"]["live"] == 3

    compacted = CliRunner().invoke(main, ["cache", "compact", str(store)])
    assert compacted.exit_code == 0 and "merged 5 parts" in compacted.stdout
    assert TeacherStore.open(store).summary().entries == len(rows) + 3


@pytest.mark.slow
def test_resume_after_a_killed_run(teacher_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["cache", "--teacher", str(teacher_dir), "--env", ENV, "--out", str(store),
            "--rollouts", "3", "--horizon", "30", "--workers", "1", "--key-scale", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "rpd.cli", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (store / "zarr.json").is_file() and TeacherStore.open(store).parts():
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its dask workers
        proc.wait()
    killed = TeacherStore.open(store)
    done = {p.name: p.path.stat().st_ino for p in killed.parts()}
    assert 1 <= len(done) < 3
    assert len(killed.read()) == 30 * len(done)  # readable, only complete episodes

    # Resume on an existing dask cluster (--scheduler), also on loopback.
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = CliRunner().invoke(main, [*args, "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    assert f"{len(done)} already in the store" in result.stdout
    store_now = TeacherStore.open(store)
    assert {p.name: p.path.stat().st_ino for p in store_now.parts() if p.name in done} == done
    rows = store_now.read(["episode", "step"])
    pairs = list(zip(rows.episode.tolist(), rows.step.tolist(), strict=True))
    first = CACHE.start  # rollouts start the seed plan's cache range by default
    assert sorted(pairs) == [(s, t) for s in range(first, first + 3) for t in range(30)]


@pytest.mark.parametrize("extra, match", [
    (["--out", None], "--out is required"),
    (["--rollouts", "0"], "nothing to label"),
    (["--noise", "0.1"], "--noise 0.1 needs --rollouts"),
    (["--rollouts", "1", "--workers", "0"], "--workers 0"),
    (["--rollouts", "1", "--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
    (["--rollouts", "1", "--key-scale", "wide"], "--key-scale 'wide'"),
    (["--demos", "missing.h5"], "--demos missing.h5: no such file"),
    (["--rollouts", "1", "--teacher", "no-such-dir"], "no such checkpoint directory"),
    (["--rollouts", "1", "--env", "PushCube-v1"], "no instruction for it"),
])
def test_bad_input_is_one_line_with_exit_code_2(teacher_dir: Path, tmp_path: Path,
                                                extra: list, match: str) -> None:
    opts = {"--teacher": str(teacher_dir), "--env": ENV, "--out": str(tmp_path / "s")}
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        opts[k] = v
    args = ["cache"] + [x for k, v in opts.items() if v is not None for x in (k, v)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert match in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_cache_info_on_something_else(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["cache", "info", str(tmp_path)])
    assert result.exit_code == 2 and "not a teacher-action store" in result.stderr


def test_a_worker_labels_a_re_fine_tuned_teacher_with_its_new_weights(tmp_path: Path) -> None:
    """A persistent worker keeps one labeller per teacher: a teacher re-fine-tuned in the same
    directory (new fingerprint) gets a new one, not the old weights under the new name."""
    from rpd.pipeline import cache as cache_mod
    from rpd.teachers.simple import TinyCNNTeacher

    spec = TeacherSpec(camera=CameraSpec("render", 40, 40), control_mode="pd_ee_delta_pose",
                       action_dim=7, tasks={ENV: "pick"})
    ckpt = tmp_path / "teacher"
    fingerprints, labelers = [], []
    try:
        for seed in (0, 1):  # "re-fine-tuned": other weights, same directory
            TinyCNNTeacher(spec, {"seed": seed}).save(ckpt)
            fingerprints.append(load_teacher(ckpt).fingerprint)
            labeler, _ = cache_mod._labeler(str(ckpt), ENV, 5, 4, fingerprints[-1])
            labelers.append(labeler)
        assert fingerprints[0] != fingerprints[1]
        assert labelers[1] is not labelers[0]
        assert labelers[1].teacher.fingerprint == fingerprints[1]
    finally:
        for labeler in labelers:
            labeler.close()
        for key in [k for k in cache_mod._LABELERS if k[0] == str(ckpt)]:
            cache_mod._LABELERS.pop(key)
