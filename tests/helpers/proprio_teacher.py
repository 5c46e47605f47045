"""Test helper: a real Teacher subclass whose action encodes the state it saw, and its checkpoint.

`ProprioTeacher` returns tanh(W · proprio) with proprio = the robot's joint positions (what the
live labeller passes), so a label can be recomputed from the transition's own observation (the
state observation of ManiSkill tasks starts with the 9 Panda joint positions): a label that
drifted to another transition would not match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rpd.data.views import CameraSpec
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, register_teacher

ENV_ID = "PushCube-v1"


@register_teacher("test-proprio")
class ProprioTeacher(Teacher):
    """action = tanh(proprio @ W), W [9, 7] from config["scale"] (a scaled identity)."""

    def __init__(self, spec: TeacherSpec, config: dict[str, Any],
                 action_stats: dict[str, list[float]] | None = None) -> None:
        super().__init__(spec, config, action_stats)
        self.weight = np.eye(spec.proprio_dim, spec.action_dim, dtype=np.float32) * float(
            config.get("scale", 3.0))
        self.calls = 0

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        assert batch.proprio is not None and batch.images.std() > 0  # it saw a rendered scene
        self.calls += len(batch)
        return np.tanh(batch.proprio @ self.weight)[:, None].astype(np.float32)

    def _save_weights(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"weight": self.weight}, str(path))

    @classmethod
    def _load(cls, meta: dict[str, Any], weights: Path) -> ProprioTeacher:
        from safetensors.numpy import load_file

        teacher = cls(TeacherSpec.from_dict(meta["spec"]), meta["config"], meta["action_stats"])
        teacher.weight = load_file(str(weights))["weight"]
        return teacher


def expected_label(obs: np.ndarray, scale: float = 3.0) -> np.ndarray:
    """The label ProprioTeacher gives the state whose observation is `obs` [N, D]: [N, 7]."""
    return np.tanh(obs[:, :7] * scale).astype(np.float32)


def make_teacher() -> ProprioTeacher:
    spec = TeacherSpec(camera=CameraSpec("render", 32, 32), control_mode="pd_ee_delta_pose",
                       action_dim=7, proprio_dim=9, tasks={ENV_ID: "push the cube"})
    return ProprioTeacher(spec, dict(scale=3.0))
