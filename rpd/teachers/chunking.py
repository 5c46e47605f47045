"""Executing action chunks in closed loop: receding horizon or temporal ensembling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rpd.teachers.base import Teacher, TeacherBatch


def ensemble_weights(n: int, decay: float) -> np.ndarray:
    """ACT's temporal-ensembling weights for n predictions of one step, oldest first:
    w_i = exp(-decay * i), normalised to sum 1. Shape [n]."""
    w = np.exp(-decay * np.arange(n, dtype=np.float64))
    return (w / w.sum()).astype(np.float32)


@dataclass
class ChunkedPolicy:
    """Turns a chunk-predicting teacher into a per-step policy for B parallel envs.

    Attributes:
        teacher: The teacher.
        mode: "label" asks the teacher every step and executes the first action of its chunk:
            the policy RPD's labels come from (each state labelled on its own);
            "receding" executes the first `execute` actions of each chunk, then re-plans;
            "ensemble" re-plans every step and averages every prediction made for the current
            step (ACT's temporal ensembling, weights exp(-decay*i), oldest first).
        execute: Actions executed per chunk in receding mode (clipped to the chunk size).
        decay: Ensembling decay.

    `teacher_calls` counts the envs the teacher was asked for (one per env and call).
    """

    teacher: Teacher
    mode: Literal["label", "receding", "ensemble"] = "receding"
    execute: int = 4
    decay: float = 0.01

    def __post_init__(self) -> None:
        self.teacher_calls = 0
        self.reset(0)

    def reset(self, num_envs: int) -> None:
        """Start fresh episodes in `num_envs` envs."""
        self._step = np.zeros(num_envs, np.int64)
        self._queue: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self._history: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(num_envs)]

    def reset_env(self, i: int) -> None:
        """Forget env i's plans (its episode ended)."""
        self._queue[i], self._history[i], self._step[i] = [], [], 0

    def act(self, batch: TeacherBatch) -> np.ndarray:
        """Actions [B, A] for the current step of each env."""
        b = len(batch)
        if len(self._step) != b:
            self.reset(b)
        if self.mode in ("label", "receding"):
            need = [i for i in range(b) if not self._queue[i]]
            if need:
                chunks = self.teacher.act_chunk(_subset(batch, need))
                self.teacher_calls += len(need)
                execute = 1 if self.mode == "label" else self.execute
                k = max(1, min(execute, chunks.shape[1]))
                for j, i in enumerate(need):
                    self._queue[i] = list(chunks[j, :k])
            actions = np.stack([self._queue[i].pop(0) for i in range(b)])
        else:
            chunks = self.teacher.act_chunk(batch)
            self.teacher_calls += b
            actions = np.empty((b, chunks.shape[2]), np.float32)
            for i in range(b):
                t = int(self._step[i])
                self._history[i].append((t, chunks[i]))
                size = chunks.shape[1]
                self._history[i] = [(s, c) for s, c in self._history[i] if t - s < size]
                preds = np.stack([c[t - s] for s, c in self._history[i]])
                actions[i] = (ensemble_weights(len(preds), self.decay)[:, None] * preds).sum(0)
        self._step += 1
        return actions


def _subset(batch: TeacherBatch, idx: list[int]) -> TeacherBatch:
    return TeacherBatch(images=batch.images[idx],
                        instructions=[batch.instructions[i] for i in idx],
                        proprio=None if batch.proprio is None else batch.proprio[idx],
                        env_states=None if batch.env_states is None else batch.env_states[idx])
