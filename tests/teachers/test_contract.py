"""Every teacher backend meets the interface: shapes, units, determinism, save -> load."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rpd.data.schema import TEACHER_JSON, TEACHER_SCHEMA_VERSION, TEACHER_WEIGHTS
from rpd.data.views import CameraSpec
from rpd.errors import InputError
from rpd.teachers.base import (
    Teacher,
    TeacherBatch,
    TeacherSpec,
    load_teacher,
    teacher_class,
    teacher_kinds,
)

STATS = dict(q01=[-0.5] * 6 + [-1.0], q99=[0.5] * 6 + [1.0], mean=[0.0] * 7, std=[0.3] * 7)


def make_teacher(kind: str) -> Teacher:
    spec = TeacherSpec(camera=CameraSpec("render", 32, 32), control_mode="pd_ee_delta_pose",
                       action_dim=7, chunk_size=4, proprio_dim=9,
                       tasks={"PushCube-v1": "push the cube to the goal"})
    if kind == "octo-small":
        from rpd.teachers.octo import OctoTeacher

        return OctoTeacher.create(spec, "tiny", STATS)
    if kind == "cnn-tiny":
        from rpd.teachers.simple import TinyCNNTeacher

        return TinyCNNTeacher(spec, {"input_size": 32}, STATS)
    if kind in ("openvla", "pi0"):  # tiny random transformers models built in code
        return teacher_class(kind).create(spec, "tiny", STATS)  # type: ignore[attr-defined]
    raise AssertionError(f"add a factory for teacher kind {kind!r} to this contract test")


def batch(n: int = 3, seed: int = 0) -> TeacherBatch:
    rng = np.random.default_rng(seed)
    return TeacherBatch(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                        instructions=["push the cube to the goal"] * n,
                        proprio=rng.normal(size=(n, 9)).astype(np.float32))


# Every backend rpd ships (test-only teachers registered by other test modules are skipped;
# `remote` has no weights and needs a server: tests/teachers/test_remote.py covers it).
BACKENDS = [k for k in teacher_kinds() if teacher_class(k).__module__.startswith("rpd.")
            and teacher_class(k).has_weights]


@pytest.fixture(params=BACKENDS)
def teacher(request: pytest.FixtureRequest) -> Teacher:
    return make_teacher(request.param)


def test_act_shapes_units_and_determinism(teacher: Teacher) -> None:
    b = batch()
    chunks = teacher.act_chunk(b)
    assert chunks.shape == (3, 4, 7) and chunks.dtype == np.float32
    assert (chunks >= np.array(STATS["q01"]) - 1e-5).all()  # env units inside q01..q99
    assert (chunks <= np.array(STATS["q99"]) + 1e-5).all()
    np.testing.assert_array_equal(teacher.act(b), chunks[:, 0])
    np.testing.assert_array_equal(teacher.act_chunk(b), chunks)
    other = teacher.act(batch(seed=1))
    assert not np.allclose(other, chunks[:, 0])  # depends on its input


def test_save_load_gives_identical_actions_and_fingerprint(teacher: Teacher,
                                                           tmp_path: Path) -> None:
    teacher.save(tmp_path / "t")
    loaded = load_teacher(tmp_path / "t")
    assert type(loaded) is type(teacher) and loaded.spec == teacher.spec
    np.testing.assert_array_equal(loaded.act_chunk(batch()), teacher.act_chunk(batch()))
    assert loaded.fingerprint == teacher.fingerprint and len(teacher.fingerprint) == 16
    meta = json.loads((tmp_path / "t" / TEACHER_JSON).read_text())
    assert meta["kind"] == teacher.kind and meta["schema_version"] == TEACHER_SCHEMA_VERSION
    assert set(meta["action_stats"]) >= {"q01", "q99", "mean", "std"}


def test_fingerprint_follows_the_weights(teacher: Teacher, tmp_path: Path) -> None:
    teacher.save(tmp_path / "t")
    weights = tmp_path / "t" / TEACHER_WEIGHTS
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(weights))
    assert load_teacher(tmp_path / "t").fingerprint != teacher.fingerprint


def test_missing_weights(teacher: Teacher, tmp_path: Path) -> None:
    teacher.save(tmp_path / "t")
    (tmp_path / "t" / TEACHER_WEIGHTS).unlink()
    with pytest.raises(InputError, match="missing"):
        load_teacher(tmp_path / "t")


def test_corrupt_weights(teacher: Teacher, tmp_path: Path) -> None:
    teacher.save(tmp_path / "t")
    weights = tmp_path / "t" / TEACHER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(InputError, match="corrupt"):
        load_teacher(tmp_path / "t")


@pytest.mark.parametrize("change, message", [
    (dict(kind="no-such-kind"), "not known"),
    (dict(schema_version=TEACHER_SCHEMA_VERSION + 1), "newer"),
])
def test_wrong_kind_or_newer_schema(teacher: Teacher, tmp_path: Path, change: dict,
                                    message: str) -> None:
    teacher.save(tmp_path / "t")
    path = tmp_path / "t" / TEACHER_JSON
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(InputError, match=message):
        load_teacher(tmp_path / "t")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such checkpoint"):
        load_teacher(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=TEACHER_JSON):
        load_teacher(tmp_path / "empty")


def test_unknown_task_instruction(teacher: Teacher) -> None:
    with pytest.raises(InputError, match="PickCube-v1"):
        teacher.spec.instruction("PickCube-v1")
