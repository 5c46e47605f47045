"""`rpd eval --teacher` gives each teacher the proprioception it was built for (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from rpd.cli import main
from rpd.data.views import CameraSpec
from rpd.teachers.base import TeacherSpec
from rpd.teachers.simple import TinyCNNTeacher


def test_a_teacher_with_fewer_proprio_dims_is_evaluated(tmp_path: Path) -> None:
    """A cnn-tiny teacher taking 9 proprio dims (joint positions) used to get all 18 and
    fail with a shape error."""
    spec = TeacherSpec(camera=CameraSpec("render", 40, 40), control_mode="pd_ee_delta_pose",
                       action_dim=7, proprio_dim=9, tasks={"PushCube-v1": "push the cube"})
    teacher = TinyCNNTeacher.create(spec).save(tmp_path / "teacher")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--teacher", str(teacher), "--env", "PushCube-v1",
                                       "--episodes", "1", "--horizon", "5", "--workers", "1",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["episodes"] == 1
