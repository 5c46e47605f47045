"""Pure functions for RPD's math: masked distillation losses and λ schedules.

The RPD loss (Jülg et al., arXiv 2503.05833, eq. 3) is L_PPO + λ · distill, where distill pulls
the student's Gaussian mean μ(s) toward the teacher's action a_T(s). The mean must carry its
gradient: a copy saved under no_grad during the rollout would make the term a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

DistillKind = Literal["mse", "l1", "bc"]
DISTILL_KINDS: tuple[str, ...] = ("mse", "l1", "bc")
ScheduleKind = Literal["constant", "linear", "cosine"]
SCHEDULE_KINDS: tuple[str, ...] = ("constant", "linear", "cosine")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the entries where `mask` is true.

    Args:
        values: [B] per-transition losses.
        mask: [B] bool (or 0/1 float): which transitions carry a teacher label.

    Returns:
        A scalar; 0 (still differentiable, zero gradient) when no entry is labelled.
    """
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def mse_distill(mean: torch.Tensor, teacher_action: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """Squared error ‖μ - a_T‖², summed over action dims, averaged over labelled transitions.

    The paper's term (eq. 3 of arXiv 2503.05833) is a squared L2 norm, hence the sum over A.

    Args:
        mean: Student action mean μ(s) [B, A], with gradient.
        teacher_action: Teacher actions [B, A] (env units).
        mask: [B] bool, true where the transition has a teacher label.
    """
    return masked_mean(((mean - teacher_action) ** 2).sum(dim=-1), mask)


def l1_distill(mean: torch.Tensor, teacher_action: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
    """Absolute error ‖μ - a_T‖₁, summed over action dims, averaged over labelled transitions.

    Args:
        mean: [B, A] with gradient; teacher_action: [B, A]; mask: [B] bool.
    """
    return masked_mean((mean - teacher_action).abs().sum(dim=-1), mask)


def bc_distill(log_prob_teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Behaviour-cloning term -log π(a_T | s), averaged over labelled transitions.

    Unlike mse/l1 it also moves the policy's standard deviation (shrinks it toward the
    teacher's actions).

    Args:
        log_prob_teacher: [B] log-probability of the teacher's action under the student.
        mask: [B] bool.
    """
    return masked_mean(-log_prob_teacher, mask)


def per_dim_squared_error(mean: torch.Tensor, teacher_action: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Squared error of each action dim, averaged over labelled transitions.

    Its sum over dims is `mse_distill`; logged per dim (distill/mse_dim_i) it shows which
    action dim a stalled copy misses.

    Args:
        mean: [B, A]; teacher_action: [B, A]; mask: [B] bool.

    Returns:
        [A]; zeros when no transition is labelled.
    """
    weights = mask.to(mean.dtype)[:, None]
    return (((mean - teacher_action) ** 2) * weights).sum(0) / weights.sum().clamp(min=1.0)


def sign_agreement(student: torch.Tensor, teacher: torch.Tensor,
                   mask: torch.Tensor) -> float:
    """Fraction of labelled transitions where student and teacher agree in sign (e.g. the
    gripper: open > 0, closed < 0); a teacher value of exactly 0 agrees with nothing.

    Args:
        student: [B]; teacher: [B]; mask: [B] bool.

    Returns:
        In [0, 1]; nan when no transition is labelled.
    """
    mask = mask.bool()
    if not mask.any():
        return float("nan")
    agree = torch.sign(student[mask]) == torch.sign(teacher[mask])
    return float(agree.float().mean())


def lambda_at(step: int, kind: str, lam: float, decay_steps: int | None) -> float:
    """The distillation weight λ at env step `step`.

    Args:
        step: Env steps done so far (all envs together).
        kind: "constant" (λ everywhere, the paper's choice), "linear" or "cosine" decay from λ
            at step 0 to exactly 0 at `decay_steps` (and after).
        lam: λ at step 0.
        decay_steps: K, the step at which a decaying λ reaches 0 (required unless constant).

    Returns:
        λ ≥ 0. When it is 0 the trainer stops consulting the teacher.
    """
    if kind == "constant" or lam == 0.0:
        return float(lam)
    if decay_steps is None or decay_steps <= 0:
        raise ValueError(f"a {kind} λ schedule needs decay_steps > 0, got {decay_steps}")
    frac = min(max(step / decay_steps, 0.0), 1.0)
    if kind == "linear":
        return float(lam * (1.0 - frac))
    if kind == "cosine":
        return 0.0 if frac >= 1.0 else float(lam * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise ValueError(f"unknown λ schedule {kind!r}; use one of {', '.join(SCHEDULE_KINDS)}")


@dataclass(frozen=True)
class LambdaSchedule:
    """λ over training (see `lambda_at`).

    Attributes:
        kind: "constant", "linear" or "cosine".
        value: λ at the start (paper: 1.0, constant).
        decay_steps: Env step at which a decaying λ reaches 0; None for constant.
    """

    kind: str = "constant"
    value: float = 1.0
    decay_steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"λ schedule {self.kind!r}: use one of {', '.join(SCHEDULE_KINDS)}")
        if self.value < 0:
            raise ValueError(f"λ {self.value}: must be ≥ 0")
        if self.kind != "constant" and (self.decay_steps is None or self.decay_steps <= 0):
            raise ValueError(f"a {self.kind} λ schedule needs decay_steps > 0")

    def __call__(self, step: int) -> float:
        return lambda_at(step, self.kind, self.value, self.decay_steps)

    def to_dict(self) -> dict[str, object]:
        return dict(kind=self.kind, value=self.value, decay_steps=self.decay_steps)


@dataclass(frozen=True)
class AdaptiveLambda:
    """The adaptive λ schedule's state between evaluations (see `adaptive_lambda_step`).

    Attributes:
        lam: λ now.
        ahead: Consecutive evaluations at which the student reached the target.
    """

    lam: float
    ahead: int = 0


def adaptive_lambda_step(state: AdaptiveLambda, student_success: float, teacher_success: float,
                         margin: float = 0.05, patience: int = 2, factor: float = 0.5,
                         floor: float = 0.01) -> tuple[AdaptiveLambda, str | None]:
    """λ after one evaluation: held while the student is below its teacher, decayed once it has
    passed the teacher and stays ahead.

    The paper keeps λ = 1 for the whole run; a cosine decay to 0 by a fixed step turned RPD into
    plain PPO from a weak policy on PickCube before the student had passed its teacher. Here λ
    only falls when the evaluations say the teacher has nothing left to teach: the student's
    success reached min(teacher + margin, 1) at `patience` evaluations in a row. Then λ is
    multiplied by `factor` at each further evaluation that stays there; below `floor` it is 0.
    A student that falls back below the target resets the count and keeps its current λ.

    Args:
        state: λ and the count of evaluations ahead so far.
        student_success: This evaluation's success rate, in [0, 1].
        teacher_success: The teacher's measured success rate at the student's horizon.
        margin: How far above the teacher the student must be.
        patience: Evaluations in a row at the target before λ falls.
        factor: λ's multiplier per evaluation once it falls, in (0, 1).
        floor: λ below this becomes 0 (the trainer then stops consulting the teacher).

    Returns:
        (the new state, a one-line reason when λ changed, else None).
    """
    target = min(teacher_success + margin, 1.0)
    if student_success < target or state.lam == 0.0:
        return AdaptiveLambda(state.lam, 0 if student_success < target else state.ahead), None
    ahead = state.ahead + 1
    if ahead < patience:
        return AdaptiveLambda(state.lam, ahead), None
    lam = state.lam * factor
    lam = 0.0 if lam < floor else lam
    reason = (f"success {student_success:.2f} ≥ {target:.2f} (teacher {teacher_success:.2f} + "
              f"{margin:g}) at {ahead} evaluations in a row: λ {state.lam:.3g} → {lam:.3g}")
    return AdaptiveLambda(lam, ahead), reason


LAMBDA_SCHEDULES: tuple[str, ...] = (*SCHEDULE_KINDS, "adaptive")
"""Every `--lambda-schedule`: the step-driven kinds of `LambdaSchedule`, and "adaptive"
(`AdaptiveSchedule`), which the evaluations drive."""


class AdaptiveSchedule:
    """λ driven by the student's evaluations (`adaptive_lambda_step`): held while the student is
    below its teacher's measured success plus `margin`, then halved at each evaluation it stays
    ahead. Called with a step like `LambdaSchedule` (the step does not matter); `observe` is
    called with each evaluation. Its state travels in the model's checkpoint, so a resumed run
    continues with the λ it had."""

    kind = "adaptive"

    def __init__(self, value: float, teacher_success: float, margin: float = 0.05,
                 patience: int = 2, factor: float = 0.5) -> None:
        if value < 0:
            raise ValueError(f"λ {value}: must be ≥ 0")
        if not 0.0 <= teacher_success <= 1.0:
            raise ValueError(f"teacher success {teacher_success}: must be in [0, 1]")
        self.value, self.teacher_success, self.margin = value, teacher_success, margin
        self.patience, self.factor = patience, factor
        self.state = AdaptiveLambda(value)
        self.changes: list[dict[str, object]] = []

    def __call__(self, step: int) -> float:
        return self.state.lam

    def observe(self, step: int, success: float) -> str | None:
        """Take one evaluation's success; returns the reason when λ changed (also kept in
        `changes` with its step)."""
        self.state, reason = adaptive_lambda_step(self.state, success, self.teacher_success,
                                                  self.margin, self.patience, self.factor)
        if reason is not None:
            self.changes.append(dict(step=int(step), lam=self.state.lam, reason=reason))
        return reason

    def to_dict(self) -> dict[str, object]:
        return dict(kind=self.kind, value=self.value, teacher_success=self.teacher_success,
                    margin=self.margin, patience=self.patience, factor=self.factor,
                    lam=self.state.lam, changes=list(self.changes))
