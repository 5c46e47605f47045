"""Shared fixtures. Everything runs offline on CPU with real ManiSkill environments."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _sb3_logdir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Models a test builds without a TensorBoard folder log nothing, but SB3 still makes an
    empty /tmp/SB3-<time> folder for each; point it at one folder under pytest's temp dir."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))


@pytest.fixture(scope="session")
def pickcube_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two motion-planned PickCube-v1 demos made once by the real CLI.

    The directory holds the source (pd_joint_pos) and converted (pd_ee_delta_pose) files, and
    `generate.out`, what the command printed.
    """
    from click.testing import CliRunner

    from rpd.cli import main

    out = tmp_path_factory.mktemp("demos")
    result = CliRunner().invoke(main, ["demos", "generate", "--env", "PickCube-v1", "--num", "2",
                                       "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    (out / "generate.out").write_text(result.stdout)
    return out


@pytest.fixture
def demos_copy(pickcube_demos: Path, tmp_path: Path) -> Path:
    """A private copy of the demo directory that a test may damage."""
    dst = tmp_path / "demos"
    shutil.copytree(pickcube_demos, dst)
    return dst
