"""Helpers shared by the command modules (the CLI edge: progress bars live here)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A tqdm bar that appears on the first update, so input errors print alone."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self._args = dict(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
        self._bar: Any = None

    def update(self, n: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(**self._args)
        self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
