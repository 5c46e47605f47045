"""The batched (GPU) simulation path against the SubprocVecEnv path, both on the CPU backend.

ManiSkill's batched env runs on the CPU backend with one env, so the very code the GPU path
uses is checked here step by step against the path every CPU run uses (issue 16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from rpd.data.batched import BatchedVecEnv
from rpd.data.devices import cuda_available
from rpd.data.vec_envs import EnvConfig, make_vec_env
from rpd.data.views import CameraSpec
from rpd.student.rpdppo import RPDPPO

CFG = EnvConfig("PushCube-v1", max_episode_steps=20)  # several episodes in a short rollout


def _steps(venv: Any, n: int) -> list[dict[str, Any]]:
    """Step `venv` with fixed random actions; one record per step."""
    rng = np.random.default_rng(0)
    venv.reset()
    records = [dict(reset_seed=venv.reset_infos[0]["episode_seed"])]
    for _ in range(n):
        action = rng.uniform(-1, 1, (1, 7)).astype(np.float32)
        obs, reward, done, infos = venv.step(action)
        records.append(dict(obs=obs[0], reward=float(reward[0]), done=bool(done[0]),
                            info=infos[0], reset_info=dict(venv.reset_infos[0])))
    return records


def test_batched_path_steps_like_the_subprocess_path() -> None:
    cpu = make_vec_env(CFG, 1, seed=3, with_env_state=True)
    batched = make_vec_env(CFG, 1, seed=3, with_env_state=True, batched=True)
    assert isinstance(cpu, DummyVecEnv) and isinstance(batched, BatchedVecEnv)
    try:
        a, b = _steps(cpu, 45), _steps(batched, 45)
    finally:
        cpu.close()
        batched.close()
    assert a[0]["reset_seed"] == b[0]["reset_seed"]
    dones = [t for t, r in enumerate(a[1:], 1) if r["done"]]
    assert dones == [20, 40]  # the time limit ends episodes at 20 steps
    for ra, rb in zip(a[1:], b[1:], strict=True):
        np.testing.assert_allclose(rb["obs"], ra["obs"], atol=1e-5)
        assert rb["reward"] == pytest.approx(ra["reward"], abs=1e-5)
        assert rb["done"] == ra["done"]
        assert rb["info"]["TimeLimit.truncated"] == ra["info"]["TimeLimit.truncated"]
        np.testing.assert_allclose(rb["info"]["env_state"], ra["info"]["env_state"], atol=1e-5)
        assert "episode" not in rb["info"]  # VecMonitor reports episodes, when they end
        if ra["done"]:
            # the true terminal observation (not the one after the reset), one reset per episode
            np.testing.assert_allclose(rb["info"]["terminal_observation"],
                                       ra["info"]["terminal_observation"], atol=1e-5)
            assert not np.allclose(rb["info"]["terminal_observation"], rb["obs"])
            assert rb["reset_info"]["episode_seed"] == ra["reset_info"]["episode_seed"]
            np.testing.assert_allclose(rb["reset_info"]["env_state"],
                                       ra["reset_info"]["env_state"], atol=1e-5)
    assert batched.resets == 1 + len(dones)


def test_a_rollout_bootstraps_and_counts_episodes_alike() -> None:
    """PPO's rollout on both paths: identical buffer rewards (with the time-limit bootstrap
    V(s_T) added at each truncation) and identical episode records."""
    results = []
    for batched in (False, True):
        venv = VecMonitor(make_vec_env(CFG, 1, seed=5, batched=batched))
        model = RPDPPO("MlpPolicy", venv, n_steps=50, batch_size=25, n_epochs=1, seed=0,
                       device="cpu", policy_kwargs=dict(net_arch=[16]))
        model.learn(50)
        venv.close()
        results.append((model.rollout_buffer.rewards.copy(),
                        [(e["r"], e["l"]) for e in model.ep_info_buffer]))
    (rewards_a, episodes_a), (rewards_b, episodes_b) = results
    np.testing.assert_allclose(rewards_b, rewards_a, atol=1e-4)
    assert [length for _, length in episodes_a] == [20, 20]
    np.testing.assert_allclose(episodes_b, episodes_a, atol=1e-4)


def test_a_pixel_student_sees_the_same_frames_on_both_paths() -> None:
    cfg = EnvConfig("PushCube-v1", obs_mode="rgb", camera=CameraSpec("render", 40, 40))
    frames = []
    for batched in (False, True):
        venv = make_vec_env(cfg, 1, seed=2, batched=batched)
        try:
            obs = venv.reset()
            obs, *_ = venv.step(np.full((1, 7), 0.5, np.float32))
        finally:
            venv.close()
        assert set(obs) == {"rgb", "proprio", "state"} and obs["rgb"].shape == (1, 40, 40, 3)
        frames.append(obs)
    for key in ("rgb", "proprio", "state"):
        np.testing.assert_allclose(frames[1][key], frames[0][key], atol=1e-5)


@pytest.mark.skipif(cuda_available(), reason="checks the message a machine without CUDA gives")
@pytest.mark.parametrize("args", [
    ["train", "--env", "PushCube-v1", "--no-teacher", "--steps", "64", "--out", "{tmp}/run"],
    ["eval", "--env", "PushCube-v1", "--student", "{tmp}/run"],
    ["cache", "--env", "PushCube-v1", "--teacher", "{tmp}/t", "--rollouts", "1",
     "--out", "{tmp}/store"],
])
def test_gpu_backend_without_cuda_is_one_line_exit_2(args: list[str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rpd.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, [*args, "--sim-backend", "gpu"])
    assert result.exit_code == 2, result.output
    assert "--sim-backend gpu: torch sees no CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_rpd_labels_on_the_batched_path_match_the_subprocess_path() -> None:
    """The env states RPD labels from (tracked through auto-resets via the infos) are the same
    on both paths, so the labels are too."""
    from rpd.labels.live import TeacherLabeler
    from rpd.labels.memory import InMemoryLabelSource
    from rpd.teachers.scripted import ScriptedTeacher

    labels = []
    with TeacherLabeler(ScriptedTeacher.build("PushCube-v1"), "PushCube-v1") as labeler:
        for batched in (False, True):
            venv = VecMonitor(make_vec_env(CFG, 1, seed=7, with_env_state=True,
                                           batched=batched))
            model = RPDPPO("MlpPolicy", venv, n_steps=50, batch_size=25, n_epochs=1, seed=0,
                           device="cpu", policy_kwargs=dict(net_arch=[16]),
                           label_source=InMemoryLabelSource(labeler.label_env_states))
            model.learn(50)
            venv.close()
            buf = model.rollout_buffer
            assert buf.label_mask.all() and model.live_teacher_calls == 50
            labels.append((buf.observations.copy(), buf.teacher_action.copy()))
    np.testing.assert_allclose(labels[1][0], labels[0][0], atol=1e-5)
    np.testing.assert_allclose(labels[1][1], labels[0][1], atol=1e-5)
    assert np.abs(labels[0][1]).max() > 0.1  # the scripted teacher acted


def test_labels_restore_states_in_padded_batches_of_the_env_size() -> None:
    from rpd.labels.live import restore_batches

    states = np.arange(10, dtype=np.float32).reshape(5, 2)
    batches = list(restore_batches(states, 3))
    assert [count for _, count in batches] == [3, 2]
    assert all(b.shape == (3, 2) for b, _ in batches)
    np.testing.assert_array_equal(batches[1][0], states[[3, 4, 4]])  # padded with the last
    assert [c for _, c in restore_batches(states, 1)] == [1] * 5


def test_cpu_labels_restore_in_the_single_env_and_match_the_live_state() -> None:
    """On the CPU backend the labelling env is the single env (one sub-env), and a batch of
    states labels as each state does alone."""
    from rpd.data.env_state import get_env_state
    from rpd.data.vec_envs import make_env
    from rpd.labels.live import TeacherLabeler
    from rpd.teachers.scripted import ScriptedTeacher

    env = make_env(CFG)
    states = []
    env.reset(seed=3)
    for _ in range(5):
        env.step(env.action_space.sample())
        states.append(get_env_state(env)[0])
    env.close()
    with TeacherLabeler(ScriptedTeacher.build("PushCube-v1"), "PushCube-v1",
                        batch_size=4) as labeler:
        assert labeler.batch_env is labeler.env
        actions, obs = labeler.label_with_obs(np.stack(states))
        alone = [labeler.label_with_obs(s[None]) for s in states]
    assert actions.shape == (5, 7) and obs.shape[0] == 5
    np.testing.assert_allclose(actions, np.concatenate([a for a, _ in alone]), atol=1e-6)
    np.testing.assert_allclose(obs, np.concatenate([o for _, o in alone]), atol=1e-6)
