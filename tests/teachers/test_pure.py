"""Unit tests of the teachers' pure functions, against hand-computed values."""

import numpy as np
import pytest
import torch

from rpd.pipeline.finetune import _chunk_l1, augment, lr_at
from rpd.teachers.chunking import ensemble_weights
from rpd.teachers.normalize import action_stats, normalize, unnormalize
from rpd.teachers.tokenizer import EOS, tokenize


def test_normalize_maps_quantile_bounds_to_unit_interval() -> None:
    q01, q99 = np.array([-2.0, 0.0, 1.0]), np.array([2.0, 4.0, 1.0])  # last dim constant
    a = np.array([[-2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [2.0, 4.0, 1.0], [5.0, -1.0, 1.0]])
    expected = np.array([[-1, -1, 0], [0, 0, 0], [1, 1, 0], [1, -1, 0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(a, q01, q99), expected, atol=1e-6)


def test_unnormalize_round_trip_inside_bounds() -> None:
    rng = np.random.default_rng(0)
    q01, q99 = np.array([-1.0, 0.5]), np.array([3.0, 0.9])
    a = rng.uniform(q01, q99, size=(100, 2))
    np.testing.assert_allclose(unnormalize(normalize(a, q01, q99), q01, q99), a, atol=1e-5)
    assert unnormalize(np.array([[0.3, 0.3]]), [1.0, 1.0], [1.0, 2.0])[0, 0] == 1.0


def test_action_stats_quantiles() -> None:
    a = np.arange(101, dtype=np.float64)[:, None]
    stats = action_stats(a)
    assert stats["q01"] == [1.0] and stats["q99"] == [99.0] and stats["mean"] == [50.0]
    with pytest.raises(ValueError):
        action_stats(np.zeros((0, 3)))


def test_tokenizer_is_deterministic_padded_and_terminated() -> None:
    ids = tokenize(["Pick up the cube", "pick up the CUBE!", "a"], vocab_size=100, max_len=6)
    assert ids.shape == (3, 6)
    np.testing.assert_array_equal(ids[0], ids[1])  # case and punctuation do not matter
    assert list(ids[0, 4:]) == [EOS, 0] and ids[2, 1] == EOS and (ids[2, 2:] == 0).all()
    assert ((ids[0, :4] >= 2) & (ids[0, :4] < 100)).all()
    long = tokenize(["w " * 50], max_len=4)
    assert long[0, -1] == EOS


def test_ensemble_weights() -> None:
    w = ensemble_weights(3, decay=np.log(2))  # 1, 1/2, 1/4 normalised
    np.testing.assert_allclose(w, np.array([4, 2, 1]) / 7, rtol=1e-6)


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110) == pytest.approx(0.0)


def test_chunk_l1_ignores_masked_slots() -> None:
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert float(_chunk_l1(pred, target, mask)) == pytest.approx((1.0 + 1.0) / 2)


def test_augment_keeps_shape_and_changes_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8)
    out = augment(images, gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert (out.float() - images.float()).abs().mean() > 1.0
