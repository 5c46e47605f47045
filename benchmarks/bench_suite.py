"""How long a new user waits for the README's two commands: the setup and the test suite.

Clones the repository's committed HEAD into a temporary folder (what CI checks out), runs
`bash scripts/setup.sh` and then `.venv/bin/python -m pytest` there, as the README says, and
times each. The setup's time depends on pip's download cache; the record holds the cache's size
before the setup ran.

    python benchmarks/bench_suite.py [--fast-tier] [--out DIR]

`--fast-tier` also times `pytest -m "not slow"`. Writes OUT/bench_suite.json
(`benchmarks/record.py`); README and Quickstart quote its minutes, Development shows it, and the
test suite checks that README and Quickstart quote what the record holds. Give it the machine:
other work skews it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Run `cmd` in `cwd`; (seconds, its output). A failure ends the benchmark: a suite that
    does not pass has no time worth publishing."""
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        sys.exit(f"bench_suite: {' '.join(cmd)} failed (exit {result.returncode}):\n{tail}")
    return seconds, result.stdout


def passed(output: str) -> int:
    """The count of passed tests in pytest's summary line."""
    found = re.findall(r"(\d+) passed", output)
    if not found:
        sys.exit("bench_suite: no 'N passed' in pytest's output")
    return int(found[-1])


def pip_cache_mib() -> float:
    """The size of pip's download cache before the setup runs, in MiB: near 0, the setup
    downloaded every wheel; hundreds, it took most of them from disk."""
    result = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                            text=True)
    where = Path(result.stdout.strip()) if result.returncode == 0 else None
    if not where or not where.is_dir():
        return 0.0
    return sum(f.stat().st_size for f in where.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-tier", action="store_true",
                        help='also time `pytest -m "not slow"`')
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/benchmarks")
    args = parser.parse_args()

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    rows = []
    cache = pip_cache_mib()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "rpd"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        seconds, _ = timed(["bash", "scripts/setup.sh"], clone)
        rows.append(dict(command="bash scripts/setup.sh", minutes=seconds / 60))
        print(f"setup: {seconds / 60:.1f} min", flush=True)
        python = str(clone / ".venv/bin/python")
        tiers = [("", [])] + ([(' -m "not slow"', ["-m", "not slow"])] if args.fast_tier else [])
        for words, extra in tiers:
            seconds, output = timed([python, "-m", "pytest", "-p", "no:cacheprovider", *extra],
                                    clone)
            rows.append(dict(command=f".venv/bin/python -m pytest{words}", tests=passed(output),
                             minutes=seconds / 60))
            print(f"pytest{words}: {rows[-1]['tests']} passed in {seconds / 60:.1f} min",
                  flush=True)
    path = record.write(args.out, "bench_suite", rows,
                        [("command", "command", "`{}`"), ("tests", "tests passed", "{}"),
                         ("minutes", "minutes", "{:.1f}")],
                        commit=head, pip_cache_mib=round(cache, 1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
