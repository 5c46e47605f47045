"""Distillation losses with masking and λ schedules, against hand-computed values."""

import math

import pytest
import torch

from rpd.student.losses import (
    LambdaSchedule,
    bc_distill,
    l1_distill,
    lambda_at,
    masked_mean,
    mse_distill,
    per_dim_squared_error,
    sign_agreement,
)

MEAN = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
TEACHER = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
MASK = torch.tensor([True, False, True])


def test_mse_sums_over_action_dims_and_averages_labelled_rows() -> None:
    # row 0: 1 + 4 = 5; row 2: 4 + 4 = 8; row 1 is masked -> (5 + 8) / 2
    assert mse_distill(MEAN, TEACHER, MASK).item() == pytest.approx(6.5)
    assert mse_distill(MEAN, TEACHER, torch.ones(3, dtype=torch.bool)).item() == pytest.approx(
        (5 + 2 + 8) / 3)


def test_l1() -> None:
    # row 0: 1 + 2 = 3; row 2: 2 + 2 = 4 -> 3.5
    assert l1_distill(MEAN, TEACHER, MASK).item() == pytest.approx(3.5)


def test_bc_is_mean_negative_log_prob_of_labelled_rows() -> None:
    log_prob = torch.tensor([-1.0, -100.0, -3.0])
    assert bc_distill(log_prob, MASK).item() == pytest.approx(2.0)


def test_no_labelled_row_gives_zero_with_zero_gradient() -> None:
    mean = MEAN.clone().requires_grad_(True)
    loss = mse_distill(mean, TEACHER, torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and mean.grad is not None and mean.grad.abs().sum() == 0


def test_masked_rows_get_no_gradient() -> None:
    mean = MEAN.clone().requires_grad_(True)
    mse_distill(mean, TEACHER, MASK).backward()
    assert mean.grad is not None
    torch.testing.assert_close(mean.grad[1], torch.zeros(2))
    # d/dμ of ((μ - a)²).sum() / 2 = (μ - a)
    torch.testing.assert_close(mean.grad[0], torch.tensor([1.0, 2.0]))


def test_masked_mean_accepts_float_masks() -> None:
    assert masked_mean(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 0.0])).item() == 2.0


def test_lambda_schedules() -> None:
    assert lambda_at(10**9, "constant", 1.0, None) == 1.0
    assert lambda_at(0, "linear", 2.0, 100) == 2.0
    assert lambda_at(25, "linear", 2.0, 100) == pytest.approx(1.5)
    assert lambda_at(100, "linear", 2.0, 100) == 0.0
    assert lambda_at(500, "linear", 2.0, 100) == 0.0
    assert lambda_at(50, "cosine", 2.0, 100) == pytest.approx(1.0)
    assert lambda_at(25, "cosine", 1.0, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lambda_at(100, "cosine", 1.0, 100) == 0.0
    assert LambdaSchedule("linear", 1.0, 10)(5) == pytest.approx(0.5)


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="decay_steps"):
        LambdaSchedule("cosine", 1.0, None)
    with pytest.raises(ValueError, match="schedule"):
        LambdaSchedule("exp", 1.0, 10)
    with pytest.raises(ValueError, match="≥ 0"):
        LambdaSchedule("constant", -1.0)


def test_per_dim_squared_error_sums_to_the_mse() -> None:
    # labelled rows 0 and 2: dim 0 (1 + 4) / 2 = 2.5, dim 1 (4 + 4) / 2 = 4
    per_dim = per_dim_squared_error(MEAN, TEACHER, MASK)
    assert per_dim.tolist() == pytest.approx([2.5, 4.0])
    assert per_dim.sum().item() == pytest.approx(mse_distill(MEAN, TEACHER, MASK).item())
    assert per_dim_squared_error(MEAN, TEACHER, torch.zeros(3, dtype=torch.bool)).tolist() == [
        0.0, 0.0]


def test_sign_agreement_counts_labelled_rows_only() -> None:
    # labelled rows: (-1 vs 1) disagree, (-1 vs 1) disagree; row 1 (0 vs 1) is masked
    assert sign_agreement(MEAN[:, 1], TEACHER[:, 1], MASK) == 0.0
    # dim 0: (1 vs 0) disagrees (a zero label agrees with nothing), (3 vs 1) agrees
    assert sign_agreement(MEAN[:, 0], TEACHER[:, 0], MASK) == 0.5
    assert math.isnan(sign_agreement(MEAN[:, 0], TEACHER[:, 0], torch.zeros(3, dtype=bool)))


def test_adaptive_lambda_holds_below_the_teacher_and_halves_once_ahead() -> None:
    from rpd.student.losses import AdaptiveLambda, adaptive_lambda_step

    s = AdaptiveLambda(1.0)
    s, why = adaptive_lambda_step(s, 0.10, teacher_success=0.20)  # below: held
    assert s == AdaptiveLambda(1.0, 0) and why is None
    s, why = adaptive_lambda_step(s, 0.30, teacher_success=0.20)  # ahead once: patience 2
    assert s == AdaptiveLambda(1.0, 1) and why is None
    s, why = adaptive_lambda_step(s, 0.25, teacher_success=0.20)  # exactly teacher + margin
    assert s == AdaptiveLambda(0.5, 2) and why is not None and "λ 1 → 0.5" in why
    s, _ = adaptive_lambda_step(s, 0.40, teacher_success=0.20)
    assert s == AdaptiveLambda(0.25, 3)
    s, why = adaptive_lambda_step(s, 0.15, teacher_success=0.20)  # fell back: count reset
    assert s == AdaptiveLambda(0.25, 0) and why is None
    for _ in range(2):
        s, _ = adaptive_lambda_step(s, 0.9, teacher_success=0.20)
    assert s.lam == 0.125
    s = AdaptiveLambda(0.015, 5)
    s, why = adaptive_lambda_step(s, 0.9, teacher_success=0.2)  # 0.0075 < floor 0.01
    assert s.lam == 0.0 and "→ 0" in why
    assert adaptive_lambda_step(s, 0.9, teacher_success=0.2) == (AdaptiveLambda(0.0, 6), None)


def test_adaptive_lambda_target_never_exceeds_full_success() -> None:
    from rpd.student.losses import AdaptiveLambda, adaptive_lambda_step

    s = AdaptiveLambda(1.0, 1)  # a 98 % teacher: the target is 1.0, not 1.03
    s, why = adaptive_lambda_step(s, 1.0, teacher_success=0.98)
    assert s.lam == 0.5 and "≥ 1.00" in why
