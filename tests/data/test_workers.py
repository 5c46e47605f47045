"""GroupedVecEnv (several envs per worker process) against SB3's SubprocVecEnv path.

Real ManiSkill envs: 2 envs with a 4-step horizon, stepped through auto-resets by both paths
(one worker holding both, one process each) from the same seed, must agree on everything the
trainer reads.
"""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv as SB3SubprocVecEnv

from rpd.data.vec_envs import EnvConfig, make_vec_env
from rpd.data.workers import GroupedVecEnv, SubprocVecEnv
from rpd.errors import InputError

CFG = EnvConfig("PushCube-v1", max_episode_steps=4)
N = 2


def _trace(workers: int, steps: int = 9) -> dict[str, list]:
    venv = make_vec_env(CFG, N, seed=4, with_env_state=True, workers=workers)
    rng = np.random.default_rng(0)
    out: dict[str, list] = dict(obs=[], rewards=[], dones=[], terminal=[], truncated=[],
                                reset_seeds=[], env_states=[])
    try:
        out["obs"].append(venv.reset())
        out["reset_seeds"].append([i["episode_seed"] for i in venv.reset_infos])
        for _ in range(steps):
            obs, rewards, dones, infos = venv.step(rng.uniform(-1, 1, (N, 7)).astype(np.float32))
            out["obs"].append(obs)
            out["rewards"].append(rewards)
            out["dones"].append(dones)
            out["env_states"].append(np.stack([i["env_state"] for i in infos]))
            for k in np.flatnonzero(dones):
                out["terminal"].append(infos[k]["terminal_observation"])
                out["truncated"].append(infos[k]["TimeLimit.truncated"])
                out["reset_seeds"].append(venv.reset_infos[k]["episode_seed"])
        out["type"] = [type(venv)]
    finally:
        venv.close()
    return out


@pytest.mark.slow
def test_grouped_workers_step_like_one_process_per_env() -> None:
    one_each, grouped = _trace(workers=N), _trace(workers=1)
    assert one_each["type"] == [SubprocVecEnv] and grouped["type"] == [GroupedVecEnv]
    assert sum(len(np.flatnonzero(d)) for d in grouped["dones"]) == 2 * N  # two auto-resets each
    for key in ("obs", "rewards", "dones", "terminal", "truncated", "env_states"):
        assert len(grouped[key]) == len(one_each[key])
        for a, b in zip(grouped[key], one_each[key], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=key)
    assert grouped["reset_seeds"] == one_each["reset_seeds"]
    # the terminal observation is the episode's last state, not the next episode's first
    assert not np.allclose(grouped["terminal"][0], grouped["obs"][4][0])


def test_grouped_workers_route_per_env_calls() -> None:
    venv = GroupedVecEnv([_factory(i) for i in range(5)], workers=2)  # blocks [0, 1, 2], [3, 4]
    try:
        assert venv.num_envs == 5 and len(venv.processes) == 2
        assert venv.get_attr("spec_id") == ["PushCube-v1"] * 5
        venv.set_attr("tag", "x", indices=[1, 4])
        assert venv.get_attr("tag", indices=[4, 1]) == ["x", "x"]
        assert venv.env_method("index", indices=[4, 0, 3]) == [4, 0, 3]
        assert venv.env_is_wrapped(gym.Wrapper, indices=[2]) == [False]
    finally:
        venv.close()
    assert all(not p.is_alive() for p in venv.processes)


def _factory(index: int):
    def build():
        class Tagged(gym.Env):
            observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
            action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
            spec_id = "PushCube-v1"

            def index(self) -> int:
                return index

            def reset(self, *, seed=None, options=None):
                return np.zeros(2, np.float32), {}

            def step(self, action):
                return np.zeros(2, np.float32), 0.0, False, False, {}

        return Tagged()

    return build


@pytest.mark.parametrize("workers", [1, N])
def test_closing_after_the_workers_were_killed_mid_step(workers: int) -> None:
    """A SIGTERM to the whole process group (a scheduler's stop) kills the workers while the
    main process waits for a step; closing then only joins them (SB3's own close raises)."""
    venv = make_vec_env(CFG, N, seed=4, workers=workers)
    assert isinstance(venv, SB3SubprocVecEnv if workers == N else GroupedVecEnv)
    venv.reset()
    venv.step_async(np.zeros((N, 7), np.float32))
    for process in venv.processes:
        os.kill(process.pid, signal.SIGTERM)
        process.join(timeout=30)
    venv.close()
    assert venv.closed and not any(p.is_alive() for p in venv.processes)


def test_grouped_workers_reject_bad_counts() -> None:
    with pytest.raises(InputError, match="--env-workers 0"):
        make_vec_env(CFG, 2, workers=0)
    with pytest.raises(ValueError, match="workers"):
        GroupedVecEnv([_factory(0)], workers=2)


@pytest.mark.slow
def test_grouped_workers_carry_a_pixel_students_dict_observations() -> None:
    from rpd.data.views import CameraSpec

    cfg = EnvConfig("PushCube-v1", obs_mode="rgb", camera=CameraSpec("render", 40, 40))
    venv = make_vec_env(cfg, 2, seed=2, workers=1)
    try:
        first = venv.reset()
        obs, *_ = venv.step(np.full((2, 7), 0.5, np.float32))
    finally:
        venv.close()
    assert isinstance(venv, GroupedVecEnv)
    assert obs["rgb"].shape == (2, 40, 40, 3) and obs["rgb"].dtype == np.uint8
    assert obs["state"].shape[0] == obs["proprio"].shape[0] == 2
    assert not np.array_equal(first["rgb"][0], first["rgb"][1])  # two episodes, two scenes
    assert not np.array_equal(obs["rgb"][0], first["rgb"][0])  # the arm moved
