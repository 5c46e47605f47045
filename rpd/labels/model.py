"""A small model of the teacher fitted to a label store, that answers only where it is sure.

Continuous states never repeat, so a nearest-key lookup answers few of a new run's states
(measured in the README). `LabelEnsemble` is M MLPs
fitted to the store's (observation, teacher action) pairs, each on its own bootstrap of
the minibatches; it answers a state when the members agree (the RMS over action dims of
their spread is at most `max_spread`) and abstains otherwise, so the state goes to the live
teacher. Its answers are never written back as teacher labels. The members are trained as
one batched network (weights [M, in, out]), which costs a single MLP's time on a CPU.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnsembleConfig:
    """How the label model is built and fitted.

    Attributes:
        members: M, the ensemble size.
        hidden: Width of each member's two hidden layers.
        steps: Adam steps of a fit from scratch; a refit after new labels takes half.
        batch_size: Rows per member per step.
        lr: Adam learning rate.
        max_spread: Answer a state only when the members' spread (RMS over action dims of
            their standard deviation) is at most this; see
            benchmarks/experiments/bench_cache_sweep.py.
        min_rows: Below this many labels the model is not fitted (it abstains everywhere).
    """

    members: int = 5
    hidden: int = 256
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    max_spread: float = 0.05
    min_rows: int = 2000


class _BatchedMLP(th.nn.Module):
    """M independent MLPs evaluated together: x [M, B, D] -> [M, B, A]."""

    def __init__(self, members: int, sizes: list[int], generator: th.Generator) -> None:
        super().__init__()
        self.weights = th.nn.ParameterList()
        self.biases = th.nn.ParameterList()
        for n_in, n_out in itertools.pairwise(sizes):
            bound = 1.0 / np.sqrt(n_in)  # torch.nn.Linear's default init
            w = (th.rand(members, n_in, n_out, generator=generator) * 2 - 1) * bound
            b = (th.rand(members, 1, n_out, generator=generator) * 2 - 1) * bound
            self.weights.append(th.nn.Parameter(w))
            self.biases.append(th.nn.Parameter(b))

    def forward(self, x: th.Tensor) -> th.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = th.baddbmm(b, x, w)
            if i < last:
                x = th.relu(x)
        return x


class LabelEnsemble:
    """An ensemble of MLPs from state observations [N, D] to teacher actions [N, A].

    Args:
        cfg: Sizes and fitting options.
        seed: Seeds the initial weights and the minibatches.
    """

    def __init__(self, cfg: EnsembleConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or EnsembleConfig()
        self.seed = int(seed)
        self.fitted_rows = 0
        self._net: _BatchedMLP | None = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._fits = 0

    @property
    def ready(self) -> bool:
        """Whether the model has been fitted (else `predict` abstains everywhere)."""
        return self._net is not None

    def fit(self, obs: np.ndarray, teacher_action: np.ndarray) -> float:
        """Fit (or refit, warm-started with half the steps) to all labels so far.

        Args:
            obs: [N, D] state observations. teacher_action: [N, A].

        Returns:
            The final training MSE (mean over members, rows and action dims); nan if skipped.
        """
        obs = np.asarray(obs, np.float32)
        act = np.asarray(teacher_action, np.float32)
        ok = np.isfinite(obs).all(1) & np.isfinite(act).all(1)
        obs, act = obs[ok], act[ok]
        if len(obs) < self.cfg.min_rows:
            return float("nan")
        # a store lists its parts in name order, not the order they were written in: fitting
        # the rows in one canonical order makes the fit a function of the labels alone, so a
        # resumed run (which reads them back from the store) fits as the uninterrupted run did
        order = np.lexsort(np.concatenate([obs, act], 1).T[::-1])
        obs, act = obs[order], act[order]
        gen = th.Generator().manual_seed(self.seed + 7919 * self._fits)
        if self._net is None or self._net.weights[0].shape[1] != obs.shape[1]:
            self._mean = obs.mean(0)
            self._std = np.maximum(obs.std(0), 1e-2)
            sizes = [obs.shape[1], self.cfg.hidden, self.cfg.hidden, act.shape[1]]
            self._net = _BatchedMLP(self.cfg.members, sizes, gen)
            steps = self.cfg.steps
        else:
            steps = max(1, self.cfg.steps // 2)
        x = th.from_numpy((obs - self._mean) / self._std)
        y = th.from_numpy(act)
        opt = th.optim.Adam(self._net.parameters(), lr=self.cfg.lr)
        m, b = self.cfg.members, min(self.cfg.batch_size, len(x))
        loss = th.zeros(())
        self._net.train()
        for _ in range(steps):
            idx = th.randint(0, len(x), (m, b), generator=gen)  # a bootstrap per member
            loss = ((self._net(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self._net.eval()
        self._fits += 1
        self.fitted_rows = len(obs)
        logger.debug("label model fit %d on %d rows: MSE %.5f", self._fits, len(obs),
                     float(loss.detach()))
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """What a later fit and every answer depend on (the fit count seeds the next fit), as
        tensors and plain values (`torch.load(weights_only=True)` reads it back)."""
        net = self._net
        return dict(fits=self._fits, fitted_rows=self.fitted_rows,
                    sizes=None if net is None else [int(net.weights[0].shape[1]), *(
                        int(w.shape[2]) for w in net.weights)],
                    net=None if net is None else {k: v.detach().clone()
                                                  for k, v in net.state_dict().items()},
                    mean=None if self._mean is None else th.from_numpy(self._mean.copy()),
                    std=None if self._std is None else th.from_numpy(self._std.copy()))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s state: the same answers, the same next fit."""
        self._fits, self.fitted_rows = int(state["fits"]), int(state["fitted_rows"])
        self._net = self._mean = self._std = None
        if state["net"] is not None:
            net = _BatchedMLP(int(state["net"]["weights.0"].shape[0]), list(state["sizes"]),
                              th.Generator())
            net.load_state_dict(state["net"])
            self._net = net.eval()
            self._mean = state["mean"].numpy().astype(np.float32)
            self._std = state["std"].numpy().astype(np.float32)

    @th.no_grad()
    def predict(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The members' mean action and their spread.

        Args:
            obs: [B, D] state observations.

        Returns:
            (mean action [B, A] f32; spread [B] f32: RMS over action dims of the members'
            standard deviation; inf where the model is not fitted).
        """
        obs = np.asarray(obs, np.float32)
        if self._net is None or self._mean is None or self._std is None:
            return (np.zeros((len(obs), 0), np.float32), np.full(len(obs), np.inf, np.float32))
        x = th.from_numpy((obs - self._mean) / self._std)
        out = self._net(x.unsqueeze(0).expand(self.cfg.members, -1, -1))  # [M, B, A]
        spread = out.std(0, unbiased=False).pow(2).mean(1).sqrt()
        return out.mean(0).numpy(), spread.numpy()

    def answer(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Actions where the members agree: (actions [B, A] f32, answered [B] bool)."""
        mean, spread = self.predict(obs)
        return mean, spread <= self.cfg.max_spread


__all__ = ["EnsembleConfig", "LabelEnsemble"]
