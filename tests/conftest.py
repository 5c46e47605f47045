"""Shared fixtures. Everything runs offline on CPU with real ManiSkill environments."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# test helpers shared by several test folders (`from proprio_teacher import make_teacher`)
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

SLOW_FILES_FIRST = ("pipeline/test_train.py", "pipeline/test_run.py",
                    "student/test_pixel_students.py", "pipeline/test_export.py",
                    "test_benchmarks.py", "pipeline/test_cache.py", "student/test_rpdppo.py",
                    "data/test_vec_envs.py", "test_results.py", "test_docs.py")
"""The test files that take longest (1-3.5 minutes each on 2 cores, `--durations=0`).
With `--dist loadfile` a file runs in one worker, so starting these first lets the workers
finish together instead of one running the last long file alone."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(root).as_posix()
        return SLOW_FILES_FIRST.index(name) if name in SLOW_FILES_FIRST else len(SLOW_FILES_FIRST)

    items.sort(key=rank)  # stable: the other files, and the tests within a file, keep their order


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


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ProprioTeacher checkpoint (teacher.json + weights): a cheap real teacher that
    reads the robot's proprioception (tests/helpers/proprio_teacher.py)."""
    from proprio_teacher import make_teacher

    return make_teacher().save(tmp_path_factory.mktemp("teacher") / "proprio")
