"""Policy parts for state students: observations standardised inside the policy.

A student's state observation mixes metres (positions of a 4 cm cube, differences of a few mm
that decide a grasp), radians and joint velocities of several rad/s. Fed raw into SB3's tanh
MLP, the millimetre-scale dims barely move a pre-activation and the velocity dims saturate it,
so the mean action cannot follow a teacher that acts on millimetres (issue 14: on PickCube a
student stopped 5-15 mm from the grasp point, its mean averaging the teacher's open and
close). `NormalizedFlatten` standardises every dim with running statistics of the observations
the policy has been trained on. The statistics live in the policy (torch buffers), so they are
saved in the student's .zip and applied by `predict` at evaluation, and the rollout buffer,
the cache keys and the teacher-action store keep the raw observations.
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

OBS_CLIP = 10.0
"""Standardised observations are clipped to ±this (as SB3's VecNormalize)."""
VAR_FLOOR = 1e-6
"""Added to each dim's variance: a dim that has not varied yet (std 0) is not blown up."""


def merge_moments(mean: np.ndarray, var: np.ndarray, count: float, batch: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and (population) variance of the union of a summarised set and a new batch.

    Chan et al.'s parallel update, so the statistics of all observations seen so far are kept
    without keeping them.

    Args:
        mean: [D] mean of the `count` observations seen so far.
        var: [D] their variance.
        count: How many (0 = none yet: the result is the batch's own moments).
        batch: [N, D] new observations.

    Returns:
        (mean [D], var [D], count + N), float64.
    """
    if len(batch) == 0:
        return np.asarray(mean, np.float64), np.asarray(var, np.float64), float(count)
    batch = np.asarray(batch, np.float64).reshape(len(batch), -1)
    n = float(len(batch))
    b_mean, b_var = batch.mean(0), batch.var(0)
    total = count + n
    delta = b_mean - mean
    new_mean = mean + delta * n / total
    m2 = var * count + b_var * n + delta**2 * count * n / total
    return new_mean, m2 / total, total


class NormalizedFlatten(BaseFeaturesExtractor):
    """Flatten, then standardise each dim: (x - mean) / sqrt(var + 1e-6), clipped to ±10.

    Until `update` is first called the statistics are mean 0, variance 1 (the identity, up to
    the floor). `RPDPPO` updates them from each rollout's observations after its update, so
    one rollout and the update that learns from it see the same normalisation (PPO's ratio
    compares log-probabilities under one function).

    Args:
        observation_space: A Box of any shape.
    """

    def __init__(self, observation_space: spaces.Box) -> None:
        dim = get_flattened_obs_dim(observation_space)
        super().__init__(observation_space, dim)
        self.register_buffer("obs_mean", th.zeros(dim, dtype=th.float32))
        self.register_buffer("obs_var", th.ones(dim, dtype=th.float32))
        self.register_buffer("obs_count", th.zeros((), dtype=th.float64))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        x = observations.flatten(1).float()
        return ((x - self.obs_mean) / th.sqrt(self.obs_var + VAR_FLOOR)).clamp(-OBS_CLIP,
                                                                               OBS_CLIP)

    def update(self, observations: np.ndarray) -> None:
        """Fold a batch of raw observations [N, ...] into the running statistics."""
        count = float(self.obs_count)
        mean, var, total = merge_moments(self.obs_mean.cpu().numpy().astype(np.float64),
                                         self.obs_var.cpu().numpy().astype(np.float64)
                                         if count > 0 else np.zeros(self.features_dim),
                                         count, observations)
        self.obs_mean.copy_(th.as_tensor(mean, dtype=th.float32))
        self.obs_var.copy_(th.as_tensor(var, dtype=th.float32))
        self.obs_count.fill_(total)
