"""Bad input: one line naming the file/option and the fix, exit code 2, nothing damaged."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.demos import converted_name, source_name

CONVERTED = converted_name("pd_ee_delta_pose")


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def fails_cleanly(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    for word in expected:
        assert word in err, err
    return err


def test_missing_file() -> None:
    fails_cleanly(["demos", "info", "/nonexistent/demo.h5"], "/nonexistent/demo.h5", "no such file")


def test_truncated_h5(demos_copy: Path) -> None:
    path = demos_copy / CONVERTED
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails_cleanly(["demos", "info", str(path)], str(path), "truncated")


def test_non_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5 at all")
    fails_cleanly(["demos", "info", str(path)], str(path), "HDF5")


def test_non_maniskill_h5(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["images"] = [1, 2, 3]
    fails_cleanly(["demos", "info", str(path)], str(path), "not a ManiSkill trajectory")


def test_missing_json(demos_copy: Path) -> None:
    (demos_copy / CONVERTED).with_suffix(".json").unlink()
    fails_cleanly(["demos", "info", str(demos_copy / CONVERTED)], ".json", "missing")


def test_invalid_json(demos_copy: Path) -> None:
    (demos_copy / CONVERTED).with_suffix(".json").write_text("{ not json")
    fails_cleanly(["demos", "info", str(demos_copy / CONVERTED)], ".json", "not valid JSON")


@pytest.mark.parametrize("damage", ["extra_episode", "wrong_length"])
def test_json_that_does_not_match_its_h5(demos_copy: Path, damage: str) -> None:
    json_path = (demos_copy / CONVERTED).with_suffix(".json")
    meta = json.loads(json_path.read_text())
    if damage == "extra_episode":
        meta["episodes"].append({**meta["episodes"][0], "episode_id": 99})
    else:
        meta["episodes"][0]["elapsed_steps"] += 5
    json_path.write_text(json.dumps(meta))
    fails_cleanly(["demos", "info", str(demos_copy / CONVERTED)], "does not match", CONVERTED)


def test_unknown_env_lists_supported() -> None:
    fails_cleanly(["demos", "generate", "--env", "PickCube-v9", "--num", "1", "--out", "/tmp/x"],
                  "--env", "PickCube-v1", "PushCube-v1")


def test_task_without_motion_planner(tmp_path: Path) -> None:
    fails_cleanly(["demos", "generate", "--env", "RollBall-v1", "--num", "1",
                   "--out", str(tmp_path / "o")], "RollBall-v1", "no motion-planning solution")
    assert not (tmp_path / "o").exists()


def test_generate_refuses_to_overwrite(demos_copy: Path) -> None:
    before = snapshot(demos_copy)
    fails_cleanly(["demos", "generate", "--env", "PickCube-v1", "--num", "1",
                   "--out", str(demos_copy)], "--force", str(demos_copy))
    assert snapshot(demos_copy) == before


def test_import_refuses_to_overwrite(demos_copy: Path) -> None:
    before = snapshot(demos_copy)
    fails_cleanly(["demos", "import", str(demos_copy / source_name()), "--out", str(demos_copy)],
                  "--force", CONVERTED)
    assert snapshot(demos_copy) == before


def test_import_of_unconvertible_control_mode(demos_copy: Path, tmp_path: Path) -> None:
    json_path = (demos_copy / CONVERTED).with_suffix(".json")
    meta = json.loads(json_path.read_text())
    for ep in meta["episodes"]:
        ep["control_mode"] = "pd_ee_target_delta_pose"
    json_path.write_text(json.dumps(meta))
    fails_cleanly(["demos", "import", str(demos_copy / CONVERTED), "--out", str(tmp_path / "o")],
                  "pd_ee_target_delta_pose", "pd_joint_pos")


def test_import_of_unknown_task(demos_copy: Path, tmp_path: Path) -> None:
    json_path = (demos_copy / source_name()).with_suffix(".json")
    meta = json.loads(json_path.read_text())
    meta["env_info"]["env_id"] = "MyTask-v0"
    json_path.write_text(json.dumps(meta))
    fails_cleanly(["demos", "import", str(demos_copy / source_name()), "--out",
                   str(tmp_path / "o")], "MyTask-v0", "PickCube-v1")


def test_bad_numbers(tmp_path: Path) -> None:
    fails_cleanly(["demos", "generate", "--env", "PickCube-v1", "--num", "0", "--out",
                   str(tmp_path)], "--num")
    fails_cleanly(["demos", "generate", "--env", "PickCube-v1", "--num", "2", "--workers", "0",
                   "--out", str(tmp_path)], "--workers")


def test_console_script_exit_code(tmp_path: Path) -> None:
    """The installed `rpd` script itself exits 2 with one line on stderr."""
    exe = shutil.which("rpd", path=str(Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, "demos", "info", str(tmp_path / "missing.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.h5" in proc.stderr
