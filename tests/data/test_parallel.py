"""`run_in_processes` with one process: the jobs run in the caller, ticks reach `progress`."""

from __future__ import annotations

import os
from typing import Any

import torch

from rpd.data.parallel import run_in_processes


def _job(n: int, ticks: Any) -> tuple[int, int]:
    torch.set_num_threads(1)  # as the real jobs do, for the process they own
    if ticks is not None:
        ticks.put(n)
    return n, os.getpid()


def test_one_worker_runs_the_jobs_here_and_keeps_the_callers_threads() -> None:
    before = torch.get_num_threads()
    threads = before + 1
    torch.set_num_threads(threads)
    ticked: list[int] = []
    try:
        results = run_in_processes([(_job, (2,)), (_job, (3,))], 1, ticked.append)
        assert results == [(2, os.getpid()), (3, os.getpid())]
        assert ticked == [2, 3]
        assert torch.get_num_threads() == threads
        assert run_in_processes([(_job, (4,))], 8, None) == [(4, os.getpid())]  # one job
        assert run_in_processes([], 2, ticked.append) == [] and ticked == [2, 3]
    finally:
        torch.set_num_threads(before)
