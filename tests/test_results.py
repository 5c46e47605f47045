"""Every published results page is regenerated from its committed data: a study folder under
docs/results/ with a `report-args.txt` holds the `rpd report` arguments (its run folders and
teacher evaluations, all inside the folder), and its `report.md` must be exactly what `rpd
report` makes of them today."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/report-args.txt"))


def test_there_are_studies_to_check() -> None:
    assert STUDIES, "no docs/results/*/report-args.txt"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_a_results_page_is_what_its_data_make(study: Path, tmp_path: Path) -> None:
    args = shlex.split((study / "report-args.txt").read_text())
    for a in args:
        if not a.startswith("-"):
            assert (ROOT / a).resolve().is_relative_to(study), f"{a}: data outside {study}"
    result = subprocess.run([sys.executable, "-m", "rpd.cli", "report", *args, "--out",
                             str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "report.md").read_text() == (study / "report.md").read_text(), (
        f"{study / 'report.md'} differs from what its data make: run `rpd report "
        f"{' '.join(args)} --out {study.relative_to(ROOT)}` and commit the result")
