"""Smoke checks of the measurement scripts in a tiny configuration (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def _record(path: Path, command: str) -> list[dict]:
    """A benchmark record's rows, after checking it says how it was made and renders as the
    docs show it (the docs hook's table)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    try:
        from docs_hooks import render_table
    finally:
        sys.path.pop(0)
    record = json.loads(path.read_text())
    assert record["command"].startswith(f"python benchmarks/{command} ")
    assert record["date"] and "cores of" in record["machine"]
    table = render_table(record).splitlines()
    assert len(table) == 2 + len(record["rows"]) + 2 and table[-1].startswith("Measured ")
    assert table[0] == "| " + " | ".join(c["title"] for c in record["columns"]) + " |"
    return record["rows"]


@pytest.mark.slow
def test_throughput_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BENCH / "bench_throughput.py"), "--steps", "128",
                             "--envs", "1", "--vec-envs", "--workers", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _record(tmp_path / "bench_throughput.json", "bench_throughput.py")
    names = [r["run"].split(" ")[0] for r in rows]
    # one env in process, no vec-env or worker rows (tests/data/test_workers.py checks those)
    assert names == ["physics", "one", "ppo", "rpd-live", "rpd-store"], names
    assert all(r["steps_per_s"] > 0 for r in rows)
    assert all(0 < r["update_share"] < 1 for r in rows[2:])
    by_name = dict(zip(names, rows, strict=True))
    assert by_name["rpd-live"]["live_calls_per_step"] == 1.0  # every state labelled live
    assert by_name["rpd-store"]["hit_rate"] == 1.0 and by_name["rpd-store"][
        "live_calls_per_step"] == 0.0
    assert "| ppo (rpd train --no-teacher, default workers) |" in result.stdout


@pytest.mark.slow
def test_gpu_check_runs_its_tiny_cpu_configuration(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "scripts" / "gpu_check" / "check.py"
    result = subprocess.run([sys.executable, str(script), "--tiny", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["run"].split(" ")[0] for r in rows] == ["ppo-state", "rpd-state", "labels"]
    assert all("error" not in r for r in rows), rows
    assert all(r["steps"] >= 128 and r["steps_per_s"] > 0 for r in rows[:2])
    assert rows[1]["live_calls"] > 0 and rows[0]["live_calls"] == 0
    assert rows[2]["states"] == 8 and rows[2]["max_diff"] < 1e-4
    assert "| rpd-state (scripted teacher) | 1 |" in result.stdout



@pytest.mark.slow
def test_pixel_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(BENCH / "bench_pixels.py"), "--steps", "128",
                             "--sizes", "36", "--envs", "1", "--lp-threads", "1",
                             "--env-counts", "1", "--frames", "3", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _record(tmp_path / "bench_pixels.json", "bench_pixels.py")
    assert [r["run"] for r in rows] == [
        "render-bound limit 36 px, one process", "render-bound limit 36 px, a process per core",
        "ppo-36px-e1-lp1", "rpd-36px-e1-lp1"]
    assert all(r["limit_steps_per_s"] > 0 and r["render_ms"] > 0 for r in rows[:2])
    ppo, rpd = rows[2:]
    assert ppo["steps_per_s"] > 0 and ppo["of_shared_limit"] > 0 and ppo["live_calls"] == 0
    # the teacher sees the student's camera: live labels, none of them rendered again
    assert rpd["own_frame"] and rpd["live_calls"] > 0 and rpd["teacher_renders"] == 0
