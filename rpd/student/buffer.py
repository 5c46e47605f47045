"""RPD's rollout buffers: SB3's RolloutBuffer (state students) and DictRolloutBuffer (pixel
students) plus a teacher label and its mask per transition.

Modelled on sb3-contrib's RecurrentRolloutBuffer (extra per-step arrays, its own samples
NamedTuple, its own `get`). Pinned to stable-baselines3 2.9 (it touches buffer internals).
A pixel student's frames stay uint8 in the buffer (SB3 stores each key in its space's dtype).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.vec_env import VecNormalize


class RPDRolloutBufferSamples(NamedTuple):
    """A minibatch for RPDPPO.train (B transitions)."""

    observations: th.Tensor  # [B, *obs_shape]
    actions: th.Tensor  # [B, A]
    old_values: th.Tensor  # [B]
    old_log_prob: th.Tensor  # [B]
    advantages: th.Tensor  # [B]
    returns: th.Tensor  # [B]
    teacher_action: th.Tensor  # [B, A], zeros where unlabelled
    label_mask: th.Tensor  # [B] bool


class RPDDictSamples(NamedTuple):
    """A minibatch of a pixel student (observations by key, `rpd.data.views.STUDENT_KEYS`)."""

    observations: dict[str, th.Tensor]
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    teacher_action: th.Tensor
    label_mask: th.Tensor


class _Labels:
    """The RPD additions shared by both buffers: `teacher_action` [T, E, A], `label_mask`
    [T, E] and, for labelling, the simulator state of every stored observation `env_states`
    [T, E, S].

    The trainer fills env states during the rollout (`add_env_states`) and labels after it
    (`set_labels`), before `get` flattens the arrays for the update.
    """

    buffer_size: int
    n_envs: int
    action_dim: int
    pos: int
    generator_ready: bool
    teacher_action: np.ndarray
    label_mask: np.ndarray
    env_states: np.ndarray | None

    def _reset_labels(self) -> None:
        self.teacher_action = np.zeros((self.buffer_size, self.n_envs, self.action_dim),
                                       dtype=np.float32)
        self.label_mask = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.env_states = None

    def add_env_states(self, env_states: np.ndarray) -> None:
        """Record the simulator states [E, S] of the observations the next `add` stores."""
        if self.env_states is None:
            self.env_states = np.zeros((self.buffer_size, self.n_envs, env_states.shape[-1]),
                                       dtype=np.float32)
        self.env_states[self.pos] = env_states

    def set_labels(self, teacher_action: np.ndarray, label_mask: np.ndarray) -> None:
        """Store the labels of the whole rollout: teacher_action [T, E, A], label_mask [T, E]."""
        assert not self.generator_ready, "labels must be set before get()"
        self.teacher_action[...] = teacher_action
        self.label_mask[...] = label_mask

    def reset(self) -> None:
        self._reset_labels()
        super().reset()  # type: ignore[misc]

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        """SB3's `get`: flatten [T, E, ...] to [T*E, ...] once (observations by key for a
        pixel student, and the labels), then yield shuffled minibatches of `_get_samples`."""
        assert self.full, "the rollout buffer is not full"  # type: ignore[attr-defined]
        if not self.generator_ready:
            flatten = RolloutBuffer.swap_and_flatten
            obs = self.observations  # type: ignore[attr-defined]
            if isinstance(obs, dict):
                for key in obs:
                    obs[key] = flatten(obs[key])
            else:
                self.observations = flatten(obs)
            for name in ("actions", "values", "log_probs", "advantages", "returns",
                         "teacher_action", "label_mask"):
                self.__dict__[name] = flatten(self.__dict__[name])
            self.generator_ready = True
        indices = np.random.permutation(self.buffer_size * self.n_envs)
        batch_size = batch_size or self.buffer_size * self.n_envs
        for start in range(0, self.buffer_size * self.n_envs, batch_size):
            yield self._get_samples(indices[start:start + batch_size])  # type: ignore[attr-defined]


class RPDRolloutBuffer(_Labels, RolloutBuffer):
    """SB3's RolloutBuffer with RPD's labels (see `_Labels`), for state students."""


    def _get_samples(self, batch_inds: np.ndarray,  # type: ignore[override]
                     env: VecNormalize | None = None) -> RPDRolloutBufferSamples:
        data = (
            self.observations[batch_inds],
            self.actions[batch_inds].astype(np.float32, copy=False),
            self.values[batch_inds].flatten(),
            self.log_probs[batch_inds].flatten(),
            self.advantages[batch_inds].flatten(),
            self.returns[batch_inds].flatten(),
            self.teacher_action[batch_inds],
        )
        tensors = tuple(map(self.to_torch, data))
        mask = th.as_tensor(self.label_mask[batch_inds].flatten(), device=self.device)
        return RPDRolloutBufferSamples(*tensors, label_mask=mask)


class RPDDictRolloutBuffer(_Labels, DictRolloutBuffer):
    """SB3's DictRolloutBuffer with RPD's labels (see `_Labels`), for pixel students."""


    def _get_samples(self, batch_inds: np.ndarray,  # type: ignore[override]
                     env: VecNormalize | None = None) -> RPDDictSamples:
        return RPDDictSamples(
            observations={k: self.to_torch(v[batch_inds]) for k, v in self.observations.items()},
            actions=self.to_torch(self.actions[batch_inds].astype(np.float32, copy=False)),
            old_values=self.to_torch(self.values[batch_inds].flatten()),
            old_log_prob=self.to_torch(self.log_probs[batch_inds].flatten()),
            advantages=self.to_torch(self.advantages[batch_inds].flatten()),
            returns=self.to_torch(self.returns[batch_inds].flatten()),
            teacher_action=self.to_torch(self.teacher_action[batch_inds]),
            label_mask=th.as_tensor(self.label_mask[batch_inds].flatten(), device=self.device))
