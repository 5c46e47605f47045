"""A benchmark's measurements as a file the docs are made from.

`write(out, name, rows, columns)` writes OUT/NAME.json: the rows, the columns to publish (key,
title, format), the command that made them, the date and the machine. A docs page shows it
with a line `<!-- rpd table: PATH.json -->` (the record's path relative to the page), which
the docs hook (`scripts/docs_hooks.py`) replaces with the table and a line saying how and
where it was measured, so a published figure is always the committed measurement.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

RECORD_SCHEMA_VERSION = 1


def machine() -> str:
    """The CPU model, its core count and memory, in words."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores of {model}{memory}, no GPU used"


def command() -> str:
    """This process's command line as a user types it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def write(out: Path, name: str, rows: list[dict[str, Any]],
          columns: list[tuple[str, str, str]], measured: bool = True, **extra: Any) -> Path:
    """OUT/NAME.json. `columns` are (row key, title, format such as "{:.0f}"); a row without a
    key shows an empty cell. `measured` False: the rows are made from committed files (no date
    or machine: the same files make the same record). `extra` is kept beside the rows."""
    out.mkdir(parents=True, exist_ok=True)
    made = (dict(date=datetime.date.today().isoformat(), machine=machine(),
                 python=platform.python_version()) if measured else {})
    record = dict(schema_version=RECORD_SCHEMA_VERSION, name=name, command=command(),
                  measured=measured, **made,
                  columns=[dict(key=k, title=t, format=f) for k, t, f in columns],
                  rows=rows, **extra)
    path = out / f"{name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path
