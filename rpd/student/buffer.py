"""RPD's rollout buffers: SB3's RolloutBuffer (state students) and DictRolloutBuffer (pixel
students) plus a teacher label and its mask per transition.

Modelled on sb3-contrib's RecurrentRolloutBuffer (extra per-step arrays, its own samples
NamedTuple, its own `get`). Pinned to stable-baselines3 2.9 (it touches buffer internals).
A pixel student's frames stay uint8 in the buffer (SB3 stores each key in its space's dtype).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Generator
from pathlib import Path
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
    """A minibatch of a pixel student (observations by key, `rpd.data.envs.STUDENT_KEYS`)."""

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


class LabelReplay:
    """The labelled transitions of earlier rollouts (observations and teacher actions), the
    latest `capacity` of them in a ring, so the distill term keeps revisiting them.

    PPO's update sees only the current rollout; a student that cannot yet tell states apart
    (a CNN on a few hundred frames) fits each rollout's labels in turn and swings between them
    (issue 15). Sampling labels of earlier rollouts beside the current ones makes the distill
    term a fit to all recent labels (as DAgger aggregates its data).

    Args:
        capacity: Transitions kept (the oldest are overwritten).
        seed: Sampling seed.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity {capacity}: must be positive")
        self.capacity = capacity
        self.obs: dict[str, np.ndarray] | np.ndarray | None = None
        self.actions: np.ndarray | None = None
        self.size = 0
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: dict[str, np.ndarray] | np.ndarray, actions: np.ndarray) -> None:
        """Keep transitions: obs [N, ...] (by key for a pixel student), actions [N, A]."""
        n = len(actions)
        if n == 0:
            return
        if n > self.capacity:  # only the latest fit
            obs = _rows(obs, slice(n - self.capacity, n))
            actions, n = actions[-self.capacity:], self.capacity
        if self.actions is None:
            def empty(a: np.ndarray) -> np.ndarray:
                return np.zeros((self.capacity, *a.shape[1:]), a.dtype)

            self.obs = ({k: empty(v) for k, v in obs.items()} if isinstance(obs, dict)
                        else empty(obs))
            self.actions = empty(actions)
        at = (self.pos + np.arange(n)) % self.capacity
        if isinstance(obs, dict):
            for k, v in obs.items():
                self.obs[k][at] = v  # type: ignore[index]
        else:
            self.obs[at] = obs  # type: ignore[index]
        self.actions[at] = actions
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray]:
        """n transitions drawn uniformly (with replacement): (obs, teacher actions)."""
        assert self.actions is not None and self.obs is not None, "the replay is empty"
        idx = self.rng.integers(0, self.size, n)
        return _rows(self.obs, idx), self.actions[idx]

    def save(self, path: Path, step: int) -> None:
        """Write the replay (uncompressed .npz, atomically) tagged with the training step it
        belongs to, so a resumed run continues with the labels it had (`load`)."""
        assert self.actions is not None and self.obs is not None, "the replay is empty"
        obs = ({f"obs.{k}": v for k, v in self.obs.items()} if isinstance(self.obs, dict)
               else {"obs": self.obs})
        meta = dict(step=int(step), capacity=self.capacity, size=self.size, pos=self.pos,
                    rng=self.rng.bit_generator.state)
        arrays = dict(actions=self.actions, meta=np.array(json.dumps(meta)), **obs)
        tmp = path.with_name(f".{path.name}.tmp")
        try:  # np.savez's own zip stays open when a write fails (a full disk)
            with open(tmp, "wb") as f, zipfile.ZipFile(f, "w") as z:
                for name, a in arrays.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, step: int, capacity: int) -> LabelReplay | None:
        """The replay `save` wrote at `step` with `capacity`; None when the file belongs to
        another step (a run killed between the two writes) or capacity."""
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta["step"] != step or meta["capacity"] != capacity:
                return None
            replay = cls(capacity)
            replay.actions = z["actions"]
            replay.obs = z["obs"] if "obs" in z.files else {
                k.removeprefix("obs."): z[k] for k in z.files if k.startswith("obs.")}
        replay.size, replay.pos = int(meta["size"]), int(meta["pos"])
        replay.rng.bit_generator.state = meta["rng"]
        return replay


def _rows(obs: dict[str, np.ndarray] | np.ndarray, idx: Any) -> dict[str, np.ndarray] | np.ndarray:
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]
