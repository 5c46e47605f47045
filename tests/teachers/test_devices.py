"""`--device`: teachers and students stay where they are told (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.devices import cuda_available
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import Teacher, TeacherBatch, TeacherSpec, place_teacher
from rpd.teachers.simple import TinyCNNTeacher

SPEC = TeacherSpec(camera=CameraSpec("render", 40, 40), control_mode="pd_ee_delta_pose",
                   action_dim=7, proprio_dim=9, tasks={"PushCube-v1": "push the cube"})


class CpuOnlyTeacher(Teacher):
    """A backend without device support (like the Hugging Face ones today)."""

    kind = "test-cpu-only"

    def act_chunk(self, batch: TeacherBatch) -> np.ndarray:
        return np.zeros((len(batch), 1, 7), np.float32)

    def _save_weights(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load(cls, meta: dict, weights: Path) -> Teacher:
        raise NotImplementedError


def test_a_teacher_placed_on_cpu_stays_there_and_acts() -> None:
    teacher = place_teacher(TinyCNNTeacher.create(SPEC), "cpu")
    assert teacher.device == "cpu"
    assert {p.device.type for p in teacher.net.parameters()} == {"cpu"}
    batch = TeacherBatch(np.zeros((2, 40, 40, 3), np.uint8), ["push the cube"] * 2,
                         np.zeros((2, 9), np.float32))
    assert teacher.act(batch).shape == (2, 7)


def test_auto_keeps_a_cpu_only_backend_on_the_cpu_and_cuda_is_refused() -> None:
    teacher = CpuOnlyTeacher(SPEC, {})
    assert place_teacher(teacher, "auto").device == "cpu"
    with pytest.raises(InputError, match="runs on the CPU only"):
        teacher.to("cuda")
    with pytest.raises(InputError, match="--device 'tpu'"):
        place_teacher(teacher, "tpu")


def test_a_student_trained_with_device_cpu_is_on_the_cpu(tmp_path: Path) -> None:
    from rpd.pipeline.evaluate import load_student

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "--env", "PushCube-v1", "--no-teacher", "--steps", "64", "--envs", "1",
        "--n-steps", "64", "--batch-size", "32", "--n-epochs", "1", "--eval-every", "64",
        "--eval-episodes", "1", "--net-arch", "16", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, meta = load_student(out, device="auto")  # where it loads says nothing of training
    assert meta["device"] == "cpu"  # the device its parameters had while it trained
    assert {p.device.type for p in model.policy.parameters()} == {model.device.type}


@pytest.mark.skipif(cuda_available(), reason="checks the message a machine without CUDA gives")
@pytest.mark.parametrize("args", [
    ["train", "--env", "PushCube-v1", "--no-teacher", "--steps", "64", "--out", "{tmp}/run"],
    ["eval", "--env", "PushCube-v1", "--student", "{tmp}/run"],
    ["cache", "--env", "PushCube-v1", "--teacher", "{tmp}/t", "--rollouts", "1",
     "--out", "{tmp}/store"],
    ["finetune-teacher", "--demos", "{tmp}/demos.h5", "--out", "{tmp}/teacher",
     "--kind", "cnn-tiny"],
])
def test_cuda_without_cuda_is_one_line_exit_2(args: list[str], tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, [*args, "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "--device cuda: torch sees no CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
