"""Fixtures for the student tests (the test teacher lives in
tests/helpers/proprio_teacher.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from proprio_teacher import make_teacher


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ProprioTeacher checkpoint (teacher.json + weights)."""
    return make_teacher().save(tmp_path_factory.mktemp("teacher") / "proprio")
