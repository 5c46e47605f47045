"""Run jobs in spawned worker processes with progress ticks (SAPIEN is not fork-safe).

One process is this one: no spawn, no second import of torch and ManiSkill (≈ 10 s), and a
process that already rendered does not pay the renderer's first-picture cost again (≈ 22 s on
a CPU, README).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from types import SimpleNamespace
from typing import Any

Progress = Callable[[int], None]
"""Called with the number of newly finished items."""


def run_in_processes(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int,
                     progress: Progress | None) -> list[Any]:
    """Run `fn(*args, ticks)` for each job in at most `workers` spawned processes.

    Each job gets a queue (`ticks`, or None without `progress`) to put counts of finished
    items on; they are forwarded to `progress`. Returns the results in completion order.
    With one process (`workers` 1 or one job) the jobs run here, one after another.
    """
    if min(workers, len(jobs)) <= 1:
        return _run_here(jobs, progress)
    ctx = mp.get_context("spawn")  # SAPIEN is not fork-safe
    with ctx.Manager() as manager:
        ticks = manager.Queue() if progress is not None else None
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=ctx) as pool:
            pending = {pool.submit(fn, *args, ticks) for fn, args in jobs}
            results = []
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(ticks, progress)
                for fut in done:
                    results.append(fut.result())
            _drain(ticks, progress)
    return results


def _run_here(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]],
              progress: Progress | None) -> list[Any]:
    import torch

    threads = torch.get_num_threads()  # jobs limit them for the process they own
    try:
        # the part of a queue the jobs use: `put` hands each count to `progress` at once
        ticks = SimpleNamespace(put=progress) if progress is not None else None
        return [fn(*args, ticks) for fn, args in jobs]
    finally:
        torch.set_num_threads(threads)


def _drain(ticks: Any, progress: Progress | None) -> None:
    if ticks is None or progress is None:
        return
    n = 0
    with contextlib.suppress(queue.Empty):
        while True:
            n += ticks.get_nowait()
    if n:
        progress(n)


