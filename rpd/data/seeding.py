"""Training episode seeds: one seed stream per training env, drawn from the seed plan's
training range (`rpd.data.seeds.TRAINING`), and the wrapper that seeds every reset from it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rpd.data.seeds import TRAINING
from rpd.errors import InputError

TRAIN_SEED_RANGE = (TRAINING.start, TRAINING.stop)
"""Training envs draw every episode seed from [2^31, 2^32), the seed plan's training range
(`rpd.data.seeds`): no demo, cache rollout or evaluation starts where a training episode did."""

EPISODE_SEED_STEP = "episode_seed_step"
"""Reset option of a training env (`SeededResets`, `rpd.data.batched.BatchedVecEnv`): restart
its episode-seed stream at `episode_seeds(run seed, k, step)` with step = the option's value,
as an env built with that `start_step` has it. `RPDPPO.restart_episodes` resets every env so at
a checkpoint, so a run resumed there starts the same episodes as the run that went on."""


def episode_seeds(seed: int, env_index: int, start_step: int = 0) -> np.random.Generator:
    """The generator of training env `env_index`'s episode seeds under run seed `seed`.

    Each env gets its own stream from numpy's SeedSequence with spawn key (env_index,
    start_step), so env k of seed s and env k' of seed s' never share a stream (SB3's
    `seed + k` made env 1 of seed 0 start where env 0 of seed 1 does), and a run resumed at
    `start_step` continues with episodes its first part did not see.
    """
    if seed < 0:
        raise InputError(f"--seed {seed}: must be ≥ 0")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(env_index, start_step)))


class SeededResets(gym.Wrapper):
    """Every reset of training env `env_index` is seeded from its own `episode_seeds` stream,
    so auto-resets are as repeatable as the first one. The seed used is in the reset info as
    "episode_seed".

    A reset given a seed (SB3's `VecEnv.seed(s)` hands env k the seed s + k) restarts the
    stream of run seed s, so a model built with the same seed replays the same episodes on the
    same env object, and no env takes s + k itself as an episode seed. A reset given the option
    `EPISODE_SEED_STEP` restarts the stream at that step.

    Args:
        env: A single env (under CPUGymWrapper).
        seed: The run seed.
        env_index: The env's index k in its VecEnv.
        start_step: The step the stream starts at (a resumed run's).
    """

    def __init__(self, env: Any, seed: int, env_index: int, start_step: int = 0) -> None:
        super().__init__(env)
        self.run_seed = seed
        self.env_index = env_index
        self.start_step = start_step
        self.seeds = episode_seeds(seed, env_index, start_step)

    def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
        if seed is not None:
            self.run_seed = max(seed - self.env_index, 0)
            self.seeds = episode_seeds(self.run_seed, self.env_index, self.start_step)
        if options and EPISODE_SEED_STEP in options:
            options = dict(options)
            step = int(options.pop(EPISODE_SEED_STEP))
            self.seeds = episode_seeds(self.run_seed, self.env_index, step)
        episode_seed = int(self.seeds.integers(*TRAIN_SEED_RANGE))
        obs, info = self.env.reset(seed=episode_seed, options=options or None)
        info["episode_seed"] = episode_seed
        return obs, info
