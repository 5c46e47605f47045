"""Damaged or unfit inputs to train, eval and run: one line naming the file or option, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.views import CameraSpec
from rpd.teachers.base import TeacherSpec
from rpd.teachers.simple import TinyCNNTeacher


def _rpd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _one_line(output: str) -> bool:
    return len(output.strip().splitlines()) == 1


def test_a_pixel_student_refuses_the_small_camera_it_would_inherit(tmp_path: Path) -> None:
    spec = TeacherSpec(camera=CameraSpec("render", 32, 32), control_mode="pd_ee_delta_pose",
                       action_dim=7, proprio_dim=9, tasks={"PushCube-v1": "push the cube"})
    teacher = TinyCNNTeacher(spec, {"input_size": 32}).save(tmp_path / "t32")
    code, output = _rpd("train", "--env", "PushCube-v1", "--obs", "rgb", "--teacher",
                        str(teacher), "--steps", "64", "--out", str(tmp_path / "run"))
    assert code == 2 and _one_line(output), output
    assert "camera is 32 px" in output and "--student-image-size 36" in output
    assert not (tmp_path / "run").exists()


def test_eval_of_a_student_json_without_env_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "student.json").write_text(json.dumps({"metrics": {"steps": 64}}))
    (run / "student.zip").write_bytes(b"PK")
    code, output = _rpd("eval", "--student", str(run), "--env", "PushCube-v1", "--episodes", "1")
    assert code == 2 and _one_line(output) and "records no env" in output, output


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"metrics": {}}'])
@pytest.mark.parametrize("dry_run", [True, False])
def test_run_with_a_damaged_student_json_is_one_line(content: str, dry_run: bool,
                                                     tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    assert _rpd("scripted-teacher", "--env", "PushCube-v1", "--out", str(teacher))[0] == 0
    out = tmp_path / "chain"
    run = out / "runs" / "PushCube-v1-sparse-rpd-s0"
    run.mkdir(parents=True)
    (run / "student.json").write_text(content)
    (out / "eval").mkdir()
    (out / "eval" / "teacher-PushCube-v1-h50.json").write_text("{}")  # no teacher eval to run
    code, output = _rpd("run", "--out", str(out), "--teacher", str(teacher),
                        *(["--dry-run"] if dry_run else []))
    assert code == 2, output
    last = output.strip().splitlines()[-1]
    assert str(run / "student.json") in last and "move" in last, output
    assert (run / "student.json").read_text() == content  # left as it was
