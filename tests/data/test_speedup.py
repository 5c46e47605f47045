"""Fast demos (`rpd demos speedup`, issue 15 item 7): merged end-effector deltas, replayed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rpd.cli import main
from rpd.data.speedup import merge_actions
from rpd.data.trajectories import open_trajectory, summarize

CONVERTED = "trajectory.none.pd_ee_delta_pose.physx_cpu.h5"


def test_merge_sums_arm_deltas_clips_and_keeps_the_last_gripper_command() -> None:
    a = np.array([[0.1, 0.2, 0, 0, 0, 0.5, 1.0],
                  [0.3, 0.9, 0, 0, 0, -0.1, 1.0],
                  [0.2, 0.0, 0, 0, 0, 0.0, -1.0],
                  [0.4, 0.0, 0, 0, 0, 0.0, -1.0],
                  [0.5, 0.5, 0, 0, 0, 0.0, 1.0]], np.float32)
    got = merge_actions(a, 2)
    want = np.array([[0.4, 1.0, 0, 0, 0, 0.4, 1.0],   # 0.2 + 0.9 clipped to 1
                     [0.6, 0.0, 0, 0, 0, 0.0, -1.0],
                     [0.5, 0.5, 0, 0, 0, 0.0, 1.0]], np.float32)  # the short last group
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(merge_actions(a, 1), a)


def test_speedup_writes_shorter_demos_that_succeed(pickcube_demos: Path, tmp_path: Path) -> None:
    src = pickcube_demos / CONVERTED
    out = tmp_path / "fast.h5"
    result = CliRunner().invoke(main, ["demos", "speedup", str(src), "--factor", "2",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    before, after = summarize(open_trajectory(src)), summarize(open_trajectory(out))
    assert after.episodes >= 1 and after.success_rate == 1.0
    assert after.length_max <= (before.length_max + 1) // 2
    assert after.control_mode == before.control_mode and after.env_id == "PickCube-v1"
    assert f"of {before.episodes} episodes" in result.output
    # the output is a finished, valid file pair; a second run refuses to overwrite it
    again = CliRunner().invoke(main, ["demos", "speedup", str(src), "--factor", "2",
                                      "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert summarize(open_trajectory(out)) == after


@pytest.mark.parametrize("args, message", [
    (["--factor", "1"], "--factor 1"),
    (["--factor", "9"], "--factor 9"),
    (["--factor", "2", "--out", "x.json"], "must end in .h5"),
])
def test_bad_speedup_options_exit_2(pickcube_demos: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["demos", "speedup", str(pickcube_demos / CONVERTED),
                                       *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_joint_position_demos_are_refused(pickcube_demos: Path, tmp_path: Path) -> None:
    src = pickcube_demos / "trajectory.h5"  # the planner's pd_joint_pos source
    assert json.loads(src.with_suffix(".json").read_text())["episodes"]
    result = CliRunner().invoke(main, ["demos", "speedup", str(src), "--factor", "2",
                                       "--out", str(tmp_path / "f.h5")])
    assert result.exit_code == 2 and "pd_joint_pos" in result.output
    assert not (tmp_path / "f.h5").exists()
