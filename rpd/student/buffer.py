"""RPD's rollout buffer: SB3's RolloutBuffer plus a teacher label and its mask per transition.

Modelled on sb3-contrib's RecurrentRolloutBuffer (extra per-step arrays, its own samples
NamedTuple, its own `get`). Pinned to stable-baselines3 2.9 (it touches buffer internals).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
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


class RPDRolloutBuffer(RolloutBuffer):
    """RolloutBuffer with `teacher_action` [T, E, A], `label_mask` [T, E] and, for labelling,
    the simulator state of every stored observation `env_states` [T, E, S].

    The trainer fills env states during the rollout (`add_env_states`) and labels after it
    (`set_labels`), before `get` flattens the arrays for the update.
    """

    teacher_action: np.ndarray
    label_mask: np.ndarray
    env_states: np.ndarray | None

    def reset(self) -> None:
        self.teacher_action = np.zeros((self.buffer_size, self.n_envs, self.action_dim),
                                       dtype=np.float32)
        self.label_mask = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.env_states = None
        super().reset()

    # ---- RPD additions ---------------------------------------------------------------------

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

    # ---- overrides -------------------------------------------------------------------------

    def get(self, batch_size: int | None = None
            ) -> Generator[RPDRolloutBufferSamples, None, None]:  # type: ignore[override]
        assert self.full, "the rollout buffer is not full"
        indices = np.random.permutation(self.buffer_size * self.n_envs)
        if not self.generator_ready:
            for name in ("observations", "actions", "values", "log_probs", "advantages",
                         "returns", "teacher_action", "label_mask"):
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        if batch_size is None:
            batch_size = self.buffer_size * self.n_envs
        start = 0
        while start < self.buffer_size * self.n_envs:
            yield self._get_samples(indices[start:start + batch_size])
            start += batch_size

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
