"""Fixtures for teacher tests: a tiny teacher fine-tuned on the session's PickCube demos."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpd.data.demos import converted_name


@pytest.fixture(scope="session")
def demo_file(pickcube_demos: Path) -> Path:
    return pickcube_demos / converted_name("pd_ee_delta_pose")


@pytest.fixture(scope="session")
def tiny_teacher_dir(demo_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` octo-small teacher on 48x48 render-camera frames, 30 steps."""
    from rpd.pipeline.finetune import FinetuneConfig, finetune_teacher

    out = tmp_path_factory.mktemp("teacher") / "tiny"
    return finetune_teacher(FinetuneConfig(demos=[demo_file], out=out, size="tiny", steps=30,
                                           batch_size=16, image_size=48, eval_every=10,
                                           checkpoint_every=100, render_workers=1))
