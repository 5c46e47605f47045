"""Policy parts: observations standardised inside the policy (state students), and the
NatureCNN policy of pixel students with an optional asymmetric critic.

A student's state observation mixes metres (positions of a 4 cm cube, differences of a few mm
that decide a grasp), radians and joint velocities of several rad/s. Fed raw into SB3's tanh
MLP, the millimetre-scale dims barely move a pre-activation and the velocity dims saturate it,
so the mean action cannot follow a teacher that acts on millimetres (on PickCube a
student stopped 5-15 mm from the grasp point, its mean averaging the teacher's open and
close). `NormalizedFlatten` standardises every dim with running statistics of the observations
the policy has been trained on. The statistics live in the policy (torch buffers), so they are
saved in the student's .zip and applied by `predict` at evaluation, and the rollout buffer,
the cache keys and the teacher-action store keep the raw observations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

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


NATURE_CNN_MIN_SIZE = 36
"""Smallest image side NatureCNN's convolutions (8/4, 4/2, 3/1) leave a pixel of."""


class PixelFeatures(BaseFeaturesExtractor):
    """NatureCNN features of a pixel student's frame, fused with vector observations.

    The frame ("rgb", [3, H, W] after SB3's VecTransposeImage, scaled to [0, 1] by SB3's
    `normalize_images`) goes through NatureCNN (Mnih et al. 2015; as the RPD reference code and
    ManiSkill's ppo_rgb.py): conv 32·8/4, 64·4/2, 64·3/1, then Linear → `features_dim`, ReLU.
    Each other key in `keys` ("proprio", "state") is standardised with running statistics
    (`NormalizedFlatten`, or flattened raw with `normalize=False`); with any of them the
    concatenation goes through Linear(· → features_dim), ReLU, so actor and critic extractors
    reading different keys have the same output size.

    Args:
        observation_space: The student's Dict space (`rpd.data.views.STUDENT_KEYS`).
        keys: The keys this extractor reads; "rgb" must be one.
        features_dim: Output size (256, as the reference).
        normalize: Standardise the vector keys.
    """

    def __init__(self, observation_space: spaces.Dict, keys: tuple[str, ...] = ("rgb",),
                 features_dim: int = 256, normalize: bool = True) -> None:
        super().__init__(observation_space, features_dim)
        if "rgb" not in keys:
            raise ValueError(f"a pixel extractor reads 'rgb'; got keys {keys}")
        self.keys = tuple(keys)
        rgb = observation_space["rgb"]
        channels = rgb.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten())
        with th.no_grad():
            n_flat = self.cnn(th.zeros(1, *rgb.shape)).shape[1]
        self.image_head = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.vector_keys = [k for k in self.keys if k != "rgb"]
        self.norms = nn.ModuleDict({
            k: NormalizedFlatten(observation_space[k]) if normalize else nn.Flatten()
            for k in self.vector_keys})
        vector_dim = sum(get_flattened_obs_dim(observation_space[k]) for k in self.vector_keys)
        self.fuse = (nn.Sequential(nn.Linear(features_dim + vector_dim, features_dim), nn.ReLU())
                     if self.vector_keys else None)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        x = self.image_head(self.cnn(observations["rgb"].float()))
        if self.fuse is None:
            return x
        vectors = [self.norms[k](observations[k]) for k in self.vector_keys]
        return self.fuse(th.cat([x, *vectors], dim=1))

    def update(self, observations: dict[str, np.ndarray]) -> None:
        """Fold a batch of raw observations (by key, [N, ...]) into the vector keys' statistics."""
        for k, norm in self.norms.items():
            if isinstance(norm, NormalizedFlatten):
                norm.update(np.asarray(observations[k]).reshape(len(observations[k]), -1))


class PixelActorCriticPolicy(MultiInputActorCriticPolicy):
    """SB3's MultiInputActorCriticPolicy with `PixelFeatures` extractors: the actor reads
    `actor_keys`, the critic `critic_keys` (an asymmetric critic when they differ: each gets its
    own extractor; otherwise one extractor is shared).

    Args (besides SB3's):
        actor_keys: What the actor sees ("rgb", optionally "proprio"): all a deployed policy
            needs.
        critic_keys: What the critic sees; None = the actor's. Adding "state" (the flat
            simulator state, known in simulation only) makes the critic asymmetric.
        normalize: Standardise the vector keys (`PixelFeatures`).
    """

    def __init__(self, *args: Any, actor_keys: tuple[str, ...] = ("rgb",),
                 critic_keys: tuple[str, ...] | None = None, normalize: bool = True,
                 **kwargs: Any) -> None:
        self.actor_keys = tuple(actor_keys)
        self.critic_keys = tuple(critic_keys) if critic_keys is not None else self.actor_keys
        self.normalize = normalize
        self._extractors_made = 0
        kwargs["features_extractor_class"] = PixelFeatures
        kwargs["share_features_extractor"] = self.critic_keys == self.actor_keys
        super().__init__(*args, **kwargs)

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        """SB3 builds the actor's extractor first, then (when not shared) the critic's."""
        keys = self.actor_keys if self._extractors_made == 0 else self.critic_keys
        self._extractors_made += 1
        return PixelFeatures(self.observation_space, keys=keys, normalize=self.normalize,
                             **self.features_extractor_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(actor_keys=self.actor_keys, critic_keys=self.critic_keys,
                    normalize=self.normalize)
        return data
