"""A VecEnv whose worker processes each step several envs (a CPU throughput lever, README).

SB3's `SubprocVecEnv` gives every env a process of its own; with 8 envs on 2 cores, 8
simulators take turns on the cores and every env step is a pipe round trip. `GroupedVecEnv`
splits the envs into `workers` contiguous blocks, and each worker process steps its block in
an SB3 `DummyVecEnv`, so one message carries a block's actions and its results. Auto-resets,
`terminal_observation`, `TimeLimit.truncated` and `reset_infos` are `DummyVecEnv`'s, which
are the same as `SubprocVecEnv`'s, so the trainer cannot tell the two apart (tested against
each other in tests/data/test_workers.py).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv as _SB3SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)


def _serve(remote: Any, parent_remote: Any, factories: CloudpickleWrapper) -> None:
    """A worker: one DummyVecEnv of this block's envs, driven by (command, data) messages."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    parent_remote.close()
    envs = DummyVecEnv(factories.var)
    try:
        while True:
            try:
                cmd, data = remote.recv()
            except (EOFError, KeyboardInterrupt):
                break
            if cmd == "step":
                obs, rewards, dones, infos = envs.step(data)
                remote.send((obs, rewards, dones, infos, list(envs.reset_infos)))
            elif cmd == "reset":
                # per-env seeds and options as the main VecEnv holds them: DummyVecEnv.reset
                # reads these two lists (its public `seed` can only set seed + k)
                envs._seeds, envs._options = list(data[0]), list(data[1])
                obs = envs.reset()
                remote.send((obs, list(envs.reset_infos)))
            elif cmd == "spaces":
                remote.send((envs.observation_space, envs.action_space))
            elif cmd == "call":
                name, args, kwargs = data
                remote.send(getattr(envs, name)(*args, **kwargs))
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
    finally:
        envs.close()
        remote.close()


def close_workers(remotes: Sequence[Any], processes: Sequence[Any], waiting: bool) -> None:
    """Ask every worker to close (after taking the answer it owes, if `waiting`) and join it.
    A worker already gone (a SIGTERM sent to the whole process group stops the workers with the
    main process) is only joined: its broken pipe is not an error."""
    for remote in remotes:
        try:
            if waiting:
                remote.recv()
            remote.send(("close", None))
        except (EOFError, OSError):
            pass  # the worker has exited
    for process in processes:
        process.join()
    for remote in remotes:
        remote.close()


class SubprocVecEnv(_SB3SubprocVecEnv):
    """SB3's `SubprocVecEnv` (one process per env) whose `close` tolerates workers that are
    already gone, as `GroupedVecEnv`'s does."""

    def close(self) -> None:
        if not self.closed:
            close_workers(self.remotes, self.processes, self.waiting)
            self.closed = True


def _concat(parts: Sequence[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


class GroupedVecEnv(VecEnv):
    """`len(factories)` envs in `workers` processes (blocks as even as possible, env order kept).

    Args:
        factories: One env constructor per env, as for `SubprocVecEnv`.
        workers: Number of worker processes, 1 ≤ workers ≤ len(factories).
        start_method: multiprocessing start method ("spawn": safe with torch threads).
    """

    def __init__(self, factories: Sequence[Callable[[], Any]], workers: int,
                 start_method: str = "spawn") -> None:
        n = len(factories)
        if not 1 <= workers <= n:
            raise ValueError(f"workers must be in [1, {n}], got {workers}")
        sizes = [len(b) for b in np.array_split(np.arange(n), workers)]
        self.blocks = np.cumsum([0, *sizes])
        ctx = mp.get_context(start_method)
        self.remotes, self.processes = [], []
        for w in range(workers):
            remote, work_remote = ctx.Pipe()
            block = list(factories[self.blocks[w]:self.blocks[w + 1]])
            process = ctx.Process(target=_serve, daemon=True,
                                  args=(work_remote, remote, CloudpickleWrapper(block)))
            process.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(process)
        self.waiting = self.closed = False
        self.remotes[0].send(("spaces", None))
        observation_space, action_space = self.remotes[0].recv()
        super().__init__(n, observation_space, action_space)

    # ---- stepping ---------------------------------------------------------------------------

    def step_async(self, actions: np.ndarray) -> None:
        for w, remote in enumerate(self.remotes):
            remote.send(("step", actions[self.blocks[w]:self.blocks[w + 1]]))
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = [remote.recv() for remote in self.remotes]
        self.waiting = False
        obs, rewards, dones, infos, reset_infos = zip(*results, strict=True)
        self.reset_infos = [i for block in reset_infos for i in block]
        return (_concat(obs), np.concatenate(rewards), np.concatenate(dones),
                [i for block in infos for i in block])

    def reset(self) -> VecEnvObs:
        for w, remote in enumerate(self.remotes):
            sl = slice(self.blocks[w], self.blocks[w + 1])
            remote.send(("reset", (self._seeds[sl], self._options[sl])))
        obs, reset_infos = zip(*[remote.recv() for remote in self.remotes], strict=True)
        self.reset_infos = [i for block in reset_infos for i in block]
        self._reset_seeds()
        self._reset_options()
        return _concat(obs)

    def close(self) -> None:
        """Close every worker; one already gone (a SIGTERM sent to the whole process group
        stops the workers with the main process) is only joined."""
        if not self.closed:
            close_workers(self.remotes, self.processes, self.waiting)
            self.closed = True

    # ---- per-env calls, routed to the worker that holds each env -------------------------------

    def _call(self, name: str, indices: VecEnvIndices, *args: Any, **kwargs: Any) -> list[Any]:
        """DummyVecEnv method `name` on the given envs (global indices), results in that order."""
        wanted = list(self._get_indices(indices))
        worker_of = np.searchsorted(self.blocks, wanted, side="right") - 1
        asked = []
        for w, remote in enumerate(self.remotes):
            local = [i - int(self.blocks[w])
                     for i, ww in zip(wanted, worker_of, strict=True) if ww == w]
            if local:
                remote.send(("call", (name, args, dict(kwargs, indices=local))))
                asked.append(w)
        # set_attr answers None: one None per env asked
        answers = {w: iter(self.remotes[w].recv() or [None] * len(wanted)) for w in asked}
        return [next(answers[w]) for w in worker_of]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        return self._call("env_method", indices, method_name, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self._call("env_is_wrapped", indices, wrapper_class)
