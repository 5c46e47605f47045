"""A table of teacher evaluations, made from the committed `rpd eval --teacher` JSON files.

Every `*.json` in DIR that is a teacher evaluation (it has `success_rate` and `teacher`) is one
row: its file name, success, success at the episode's end, mean return, mean length, the
episodes and horizon. Writes DIR/teachers.json, a record (`benchmarks/record.py`, made from
files, so the test suite remakes it and fails on any difference) that a docs page shows with
`<!-- rpd table: PATH/teachers.json -->`:

    python benchmarks/teacher_rows.py --evals docs/results/PickCube-v1-learned-teacher \
        --out docs/results/PickCube-v1-learned-teacher
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import record


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"teacher_rows: {message}", file=sys.stderr)
    sys.exit(2)


def rows(folder: Path) -> list[dict]:
    """One row per teacher evaluation file in `folder`, in file-name order."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{path}: not a readable JSON file ({e}); remove it or fix it")
        if not isinstance(result, dict) or not {"success_rate", "teacher"} <= result.keys():
            continue  # a record or another file beside the evaluations
        out.append(dict(file=path.name, success=result["success_rate"],
                        success_at_end=result.get("success_at_end"),
                        mean_return=result.get("mean_return"),
                        mean_length=result.get("mean_length"),
                        episodes=result.get("episodes"), horizon=result.get("horizon"),
                        chunk_mode=result.get("chunk_mode")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evals", type=Path, required=True,
                        help="folder of committed teacher evaluation JSON files")
    parser.add_argument("--out", type=Path, required=True, help="folder for teachers.json")
    args = parser.parse_args()
    if not args.evals.is_dir():
        fail(f"--evals {args.evals}: not a folder; give the study folder")
    found = rows(args.evals)
    if not found:
        fail(f"--evals {args.evals}: no teacher evaluation JSON in it (`rpd eval --teacher`)")
    path = record.write(args.out, "teachers", found,
                        [("file", "evaluation file", "`{}`"), ("success", "success", "{:.0%}"),
                         ("success_at_end", "success at the end", "{:.0%}"),
                         ("mean_return", "mean return", "{:.2f}"),
                         ("mean_length", "mean length", "{:.1f}"),
                         ("episodes", "episodes", "{}"), ("horizon", "horizon", "{}"),
                         ("chunk_mode", "mode", "{}")],
                        measured=False)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
