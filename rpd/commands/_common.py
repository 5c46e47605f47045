"""Helpers shared by the command modules (the CLI edge: progress bars live here)."""

from __future__ import annotations

import sys
from typing import Any

import click

sim_backend_option = click.option(
    "--sim-backend", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
    help="ManiSkill simulation: auto = the GPU when CUDA is present, else the CPU.")
"""`--sim-backend`, shared by train, eval and cache."""
device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Torch device: auto (CUDA when present), cpu or cuda[:N].")
"""`--device`, shared by train, eval, cache and finetune-teacher."""


class Progress:
    """A tqdm bar that appears on the first update, so input errors print alone.

    The first update sets where the bar starts (a resumed run's step, or the first chunk of
    work, which includes start-up) and is left out of the rate, so the rate shown is this
    process's own pace rather than a jump to the resumed step.
    """

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self._args = dict(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
        self.bar: Any = None
        self._postfix = ""

    def update(self, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(initial=n, postfix=self._postfix or None, **self._args)  # draws
            return
        self.bar.update(n)

    def set_postfix(self, text: str) -> None:
        """Text shown after the rate (e.g. the latest evaluation), kept for a bar not yet open;
        drawn with the next update."""
        self._postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PhaseBars:
    """Progress bars of consecutive phases whose sizes only the work knows: `update(phase, n,
    total)` opens a phase's bar on its first call (closing the previous phase's) and closes it
    once `total` is reached.

    Args:
        phases: phase -> (description, unit).
    """

    def __init__(self, phases: dict[str, tuple[str, str]]) -> None:
        self.phases = phases
        self.phase: str | None = None
        self.bar: Progress | None = None

    def update(self, phase: str, n: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase, self.bar = phase, Progress(total, *self.phases[phase])
        assert self.bar is not None
        self.bar.update(n)
        if self.bar.bar is not None and self.bar.bar.n >= total:
            self.close()  # done: its rate stays the phase's own

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
