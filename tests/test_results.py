"""Every published results page is regenerated from its committed data: a study folder under
docs/results/ with a `report-args.txt` holds the `rpd report` arguments (its run folders and
teacher evaluations, all inside the folder), and its `report.md` must be exactly what `rpd
report` makes of them today."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rpd.cli import main

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/report-args.txt"))


def test_there_are_studies_to_check() -> None:
    assert STUDIES, "no docs/results/*/report-args.txt"


@pytest.mark.parametrize("study", STUDIES, ids=[s.name for s in STUDIES])
def test_a_results_page_is_what_its_data_make(study: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    args = shlex.split((study / "report-args.txt").read_text())
    for a in args:
        if not a.startswith("-"):
            assert (ROOT / a).resolve().is_relative_to(study), f"{a}: data outside {study}"
    monkeypatch.chdir(ROOT)  # the arguments are relative to the repository, as the docs give them
    result = CliRunner().invoke(main, ["report", *args, "--out", str(tmp_path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output[-2000:]
    made, committed = (json.loads((d / "report.json").read_text()) for d in (tmp_path, study))
    made.pop("created"), committed.pop("created")  # when it was made
    assert made == committed, f"{study / 'report.json'} differs from what its data make"
    assert (tmp_path / "report.md").read_text() == (study / "report.md").read_text(), (
        f"{study / 'report.md'} differs from what its data make: run `rpd report "
        f"{' '.join(args)} --out {study.relative_to(ROOT)}` and commit the result")


DERIVED = sorted(p for p in (ROOT / "docs" / "results").rglob("*.json")
                 if p.stat().st_size < 1_000_000 and '"measured": false' in p.read_text())


def test_there_are_records_made_from_files() -> None:
    assert DERIVED, "no docs/results record with measured false"


@pytest.mark.parametrize("record", DERIVED, ids=[p.parent.name for p in DERIVED])
def test_a_record_made_from_committed_files_is_what_they_make(record: Path,
                                                              tmp_path: Path) -> None:
    """A table made from committed files (`benchmarks/record.py`, measured false) is remade by
    its own command, writing to a scratch folder, and must be the same."""
    committed = json.loads(record.read_text())
    args = shlex.split(committed["command"])
    assert args[0] == "python" and "--out" in args, committed["command"]
    args[args.index("--out") + 1] = str(tmp_path)
    result = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    remade = json.loads((tmp_path / record.name).read_text())
    assert (remade["columns"], remade["rows"]) == (committed["columns"], committed["rows"]), (
        f"{record} differs from what its files make: run `{committed['command']}` and commit it")


SUITE_RECORD = ROOT / "docs" / "results" / "benchmarks" / "bench_suite.json"
README_COMMANDS = ("bash scripts/setup.sh", ".venv/bin/python -m pytest")


def _quoted_minutes(page: Path) -> dict[str, str]:
    """{command: the minutes its comment quotes} for the README's two commands, where a code
    line of `page` runs one with a comment like `# 11.2 min on 2 cores`."""
    quoted = {}
    for line in page.read_text().splitlines():
        code, _, comment = line.strip().partition("#")
        minutes = re.search(r"(\d+(?:\.\d+)?) min\b", comment)
        if code.strip() in README_COMMANDS and minutes:
            quoted[code.strip()] = minutes.group(1)
    return quoted


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_quoted_setup_and_test_times_are_the_measured_ones(page: str) -> None:
    """The minutes README and Quickstart give for setup and tests are those of the committed
    `benchmarks/bench_suite.py` record, as it formats them."""
    text = (ROOT / page).read_text()
    assert all(c in text for c in README_COMMANDS), f"{page} lacks the setup or test command"
    quoted = _quoted_minutes(ROOT / page)
    if quoted:  # a page may give the commands without times; a time it gives is the record's
        rows = {r["command"]: r for r in json.loads(SUITE_RECORD.read_text())["rows"]}
        for command, minutes in quoted.items():
            assert minutes == f"{rows[command]['minutes']:.1f}", (
                f"{page} quotes {minutes} min for `{command}`; {SUITE_RECORD.name} holds "
                f"{rows[command]['minutes']:.1f}: quote the record or re-measure with "
                "`python benchmarks/bench_suite.py`")


def _percent(x: float) -> str:
    return f"{100 * x:.0f} %"


def _heldout_cell(group: dict) -> str:
    """A group's held-out success as README's results table writes it: the interquartile mean
    and its 95 % interval for three seeds or more, else the one seed's success."""
    iqm = group["heldout_iqm"]
    if iqm["n"] >= 3:
        return f"{_percent(iqm['iqm'])} [{100 * iqm['low']:.0f}, {100 * iqm['high']:.0f}]"
    return _percent(iqm["iqm"])


def test_the_readme_results_table_is_what_its_studies_hold() -> None:
    """Every row of README's results table that links its study's data quotes the teacher,
    RPD and PPO figures of that study's report; every row without a † links one."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| ") and "%" in line]
    assert rows, "no results rows in README.md"
    for row in rows:
        task, teacher, rpd, ppo, details = (c.strip() for c in row.strip("|").split("|"))
        data = re.search(r"\[data\]\((docs/results/[^)]+)/report\.md\)", details)
        if data is None:
            assert "†" in task, f"README row without a data link: {task}"
            continue
        report = json.loads((ROOT / data.group(1) / "report.json").read_text())
        groups = report["groups"]
        seeds = next((n for words, n in (("three seeds", 3), ("two seeds", 2), ("one seed", 1))
                      if words in task), None)
        assert seeds, f"README row names no seed count: {task}"
        rpd_groups = [g for g in groups if g["method"] == "rpd" and g["n_seeds"] == seeds
                      and _heldout_cell(g) == rpd]
        assert len(rpd_groups) == 1, f"{task}: no single {seeds}-seed RPD group of {rpd}"
        group = rpd_groups[0]
        assert group["teacher_eval"] and _percent(group["teacher_eval"]["success"]) == teacher, (
            f"{task}: teacher {teacher}")
        ppo_cells = {_heldout_cell(g) for g in groups
                     if g["method"] == "ppo" and g["n_seeds"] == seeds} or {"—"}
        assert ppo in ppo_cells, f"{task}: PPO {ppo}"  # "—": the study has no PPO run
