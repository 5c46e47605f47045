"""Pixel students (`rpd train --obs rgb`, issue 15) on real ManiSkill envs, tiny settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from click.testing import CliRunner
from video_check import assert_playable

from rpd.cli import main
from rpd.data.env_state import get_env_state
from rpd.data.store import TeacherStore
from rpd.data.vec_envs import EnvConfig, make_env, make_vec_env, render_states
from rpd.data.views import CameraSpec
from rpd.labels.live import TeacherLabeler
from rpd.student.policies import PixelActorCriticPolicy
from rpd.student.rpdppo import RPDPPO
from rpd.teachers.base import TeacherSpec, load_teacher
from rpd.teachers.simple import TinyCNNTeacher

ENV_ID = "PushCube-v1"
SIZE = 40  # NatureCNN needs ≥ 36 px
TINY = ["--env", ENV_ID, "--envs", "1", "--n-steps", "64", "--batch-size", "32",
        "--n-epochs", "1", "--eval-every", "1000", "--eval-episodes", "1", "--net-arch", "32"]


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def cnn_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real cnn-tiny teacher (random weights) that sees the render camera at SIZE px."""
    spec = TeacherSpec(camera=CameraSpec("render", SIZE, SIZE), control_mode="pd_ee_delta_pose",
                       action_dim=7, proprio_dim=9, tasks={ENV_ID: "push the cube"})
    return TinyCNNTeacher.create(spec).save(tmp_path_factory.mktemp("cnn") / "teacher")


@pytest.fixture(scope="module")
def own_frame_run(cnn_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 RPD steps of a camera-only student that sees exactly the teacher's view."""
    out = tmp_path_factory.mktemp("pixel") / "run"
    code, output = _rpd("train", *TINY, "--obs", "rgb", "--teacher", str(cnn_teacher),
                        "--steps", "128", "--out", str(out))
    assert code == 0, output
    return out


@pytest.mark.slow
def test_own_frame_labels_equal_restore_and_render_labels(own_frame_run: Path,
                                                          cnn_teacher: Path) -> None:
    meta = json.loads((own_frame_run / "student.json").read_text())
    assert meta["obs_spec"]["camera"] == dict(name="render", width=SIZE, height=SIZE,
                                              shift_deg=0.0)
    assert meta["obs_spec"]["shapes"]["rgb"] == [3, SIZE, SIZE]  # SB3's channel-first frames
    m = meta["metrics"]
    assert m["own_frame_labels"] and m["live_teacher_calls"] == 128
    assert m["teacher_renders"] == 0  # no frame was rendered only for a label
    rows = TeacherStore.open(own_frame_run / "cache").read(["env_state", "teacher_action"])
    assert len(rows.teacher_action) == 128
    with TeacherLabeler(load_teacher(cnn_teacher), ENV_ID) as labeler:
        restored = labeler.label_env_states(rows.env_state)
    assert np.abs(rows.teacher_action).max() > 0.01  # the labels are not all ~0
    np.testing.assert_allclose(rows.teacher_action, restored, atol=1e-4)


@pytest.mark.slow
def test_pixel_run_resumes_evaluates_and_records_video(own_frame_run: Path,
                                                       cnn_teacher: Path) -> None:
    code, output = _rpd("train", *TINY, "--obs", "rgb", "--teacher", str(cnn_teacher),
                        "--steps", "192", "--out", str(own_frame_run), "--resume")
    assert code == 0, output
    assert json.loads((own_frame_run / "student.json").read_text())["metrics"]["steps"] == 192
    video = own_frame_run / "video"
    code, output = _rpd("eval", "--student", str(own_frame_run), "--env", ENV_ID,
                        "--episodes", "1", "--video", str(video))
    assert code == 0, output
    result = json.loads((own_frame_run / "eval" / f"{ENV_ID}-h50.json").read_text())
    assert result["episodes"] == 1 and result["horizon"] == 50
    assert_playable(next(video.glob("*.mp4")), frames=result["length"], size=SIZE)


@pytest.mark.slow
def test_rendered_states_equal_the_frames_seen_while_stepping() -> None:
    cfg = EnvConfig(ENV_ID, obs_mode="rgb+proprio", camera=CameraSpec("render", SIZE, SIZE))
    env = make_env(cfg)
    try:
        obs, _ = env.reset(seed=5)
        frames, proprio, states = [], [], []
        for _ in range(5):
            frames.append(obs["rgb"][0])
            proprio.append(obs["proprio"][0])
            states.append(get_env_state(env)[0])
            obs, *_ = env.step(np.full(env.action_space.shape, 0.5, np.float32))
    finally:
        env.close()
    rgb, rendered_proprio = render_states(cfg, np.stack(states), workers=2)
    assert rgb.shape == (5, SIZE, SIZE, 3) and rgb.dtype == np.uint8
    # in order, from two processes: each state's frame is the one seen there and no other
    seen = np.stack(frames).astype(float)
    distance = np.abs(rgb.astype(float)[:, None] - seen[None]).mean(axis=(2, 3, 4))
    assert (distance.argmin(axis=1) == np.arange(5)).all(), distance
    assert np.diag(distance).max() < 0.5 < np.sort(distance, axis=1)[:, 1].min(), distance
    np.testing.assert_allclose(rendered_proprio, np.stack(proprio), atol=1e-5)


@pytest.mark.slow
def test_teacher_renders_count_live_calls_when_the_views_differ(
        own_frame_run: Path, cnn_teacher: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A student that sees a larger frame than its teacher, with a store of the teacher's
    labels: its offline phase fits its own (rendered) view of the stored states (a subset of
    100 here) and hands them to the label replay, and each label the store misses costs one
    teacher render."""
    monkeypatch.setattr("rpd.pipeline.offline.PIXEL_OFFLINE_STATES", 100)
    cache = tmp_path / "cache"
    shutil.copytree(own_frame_run / "cache", cache)
    stored = len(TeacherStore.open(cache).read(["teacher_action"]).teacher_action)
    out = tmp_path / "run"
    code, output = _rpd("train", *TINY, "--obs", "rgb", "--student-image-size", str(SIZE + 8),
                        "--teacher", str(cnn_teacher), "--steps", "64", "--cache", str(cache),
                        "--offline-steps", "40", "--label-replay", "1000", "--out", str(out))
    assert code == 0, output
    m = json.loads((out / "student.json").read_text())["metrics"]
    assert m["offline"]["stored"] == stored >= 128 and m["offline"]["entries"] == 100
    assert m["offline"]["replayed"] == 100
    assert m["offline"]["mse_end"] < m["offline"]["mse_start"]
    assert not m["own_frame_labels"]
    # the same env seed: the first state is stored, the student's own states are not
    assert 0 < m["teacher_renders"] == m["live_teacher_calls"] < 64


def test_a_pixel_student_reloads_with_identical_actions(tmp_path: Path) -> None:
    cfg = EnvConfig(ENV_ID, obs_mode="rgb+proprio", camera=CameraSpec("render", SIZE, SIZE))
    venv = make_vec_env(cfg, 1, seed=0)
    try:
        model = RPDPPO(PixelActorCriticPolicy, venv, n_steps=32, batch_size=16, n_epochs=1,
                       seed=0, device="cpu",
                       policy_kwargs=dict(actor_keys=("rgb", "proprio"), net_arch=[16]))
        model.learn(64)
        obs = venv.reset()
    finally:
        venv.close()
    norm = model.policy.features_extractor.norms["proprio"]
    assert float(norm.obs_count) == 64  # the running statistics were updated
    before, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "student.zip")
    loaded = RPDPPO.load(tmp_path / "student.zip", device="cpu")
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    assert isinstance(loaded.policy, PixelActorCriticPolicy)
    assert loaded.policy.actor_keys == ("rgb", "proprio")


@pytest.mark.parametrize("critic_state", [False, True])
def test_critic_state_reaches_the_critic_only(critic_state: bool) -> None:
    space = gym.spaces.Dict({
        "rgb": gym.spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8),
        "proprio": gym.spaces.Box(-np.inf, np.inf, (18,), np.float32),
        "state": gym.spaces.Box(-np.inf, np.inf, (35,), np.float32)})
    policy = PixelActorCriticPolicy(
        space, gym.spaces.Box(-1, 1, (7,), np.float32), lambda _: 3e-4, net_arch=[16],
        critic_keys=("rgb", "state") if critic_state else None)
    rng = np.random.default_rng(0)
    obs = {k: th.as_tensor(rng.uniform(0, 255, (4, *s.shape)).astype(s.dtype))
           for k, s in space.spaces.items()}
    other = {**obs, "state": obs["state"] + 5.0}
    with th.no_grad():
        mean = policy.get_distribution(obs).distribution.mean
        value = policy.predict_values(obs)
        th.testing.assert_close(policy.get_distribution(other).distribution.mean, mean)
        changed = not th.allclose(policy.predict_values(other), value)
    assert changed == critic_state
    assert policy.share_features_extractor == (not critic_state)


@pytest.mark.parametrize("args, message", [
    (["--obs", "rgb", "--student-image-size", "0"], "--student-image-size 0"),
    (["--critic-state"], "--critic-state: only pixel students"),
    (["--obs", "rgb", "--student-camera", "no_such_camera"], "--student-camera 'no_such_camera'"),
    (["--obs", "depth"], "--obs 'depth'"),
])
def test_bad_pixel_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = _rpd("train", *TINY, "--no-teacher", "--steps", "64", *args,
                        "--out", str(tmp_path / "run"))
    assert code == 2 and message in output, output
    assert len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_student_eval_does_not_depend_on_the_worker_split(own_frame_run: Path) -> None:
    """Sampled actions (the harder case: each episode seeds torch with its own seed)."""
    results = []
    for workers in ("1", "2"):
        out = own_frame_run / f"eval-w{workers}.json"
        code, output = _rpd("eval", "--student", str(own_frame_run), "--env", ENV_ID,
                            "--episodes", "3", "--horizon", "10", "--workers", workers,
                            "--json", str(out), "--stochastic")
        assert code == 0, output
        results.append(json.loads(out.read_text()))
    assert results[1]["workers"] == 2
    for key in ("success", "return", "length"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-5)
