"""Observation normalisation inside the student policy."""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces

from rpd.student.policies import OBS_CLIP, NormalizedFlatten, merge_moments


def test_merge_moments_equals_the_moments_of_the_union() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (50, 4)), rng.normal(-1.0, 0.5, (30, 4))
    mean, var, count = merge_moments(a.mean(0), a.var(0), len(a), b)
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, both.var(0), rtol=1e-12)
    assert count == 80
    # from nothing: the batch's own moments; an empty batch changes nothing
    mean0, var0, count0 = merge_moments(np.zeros(4), np.zeros(4), 0, a)
    np.testing.assert_allclose(mean0, a.mean(0))
    np.testing.assert_allclose(var0, a.var(0))
    assert merge_moments(mean0, var0, count0, np.zeros((0, 4)))[2] == 50


def test_normalized_flatten_standardises_and_round_trips_its_statistics() -> None:
    space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    norm = NormalizedFlatten(space)
    x = th.tensor([[1.0, 2.0, 3.0]])
    th.testing.assert_close(norm(x), x / np.sqrt(1 + 1e-6))  # identity before any update
    rng = np.random.default_rng(1)
    data = np.stack([rng.normal(0.1, 0.01, 1000), rng.normal(-5, 3, 1000),
                     np.full(1000, 7.0)], 1).astype(np.float32)
    norm.update(data[:600])
    norm.update(data[600:])
    out = norm(th.as_tensor(data)).numpy()
    np.testing.assert_allclose(out[:, :2].mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(out[:, :2].std(0), 1.0, atol=1e-2)  # the 1e-6 variance floor
    assert (out[:, 2] == 0).all()  # a constant dim is not blown up
    assert norm(th.tensor([[1e3, 0.0, 7.0]]))[0, 0] == OBS_CLIP
    clone = NormalizedFlatten(space)
    clone.load_state_dict(norm.state_dict())  # saved with the policy
    th.testing.assert_close(clone(th.as_tensor(data)), norm(th.as_tensor(data)))


def test_random_shift_translates_each_image_within_the_pad() -> None:
    from rpd.student.rpdppo import random_shift

    images = th.arange(4 * 3 * 10 * 10, dtype=th.uint8).reshape(4, 3, 10, 10)
    out = random_shift(images, 2, th.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == th.uint8
    padded = th.nn.functional.pad(images.float(), (2, 2, 2, 2), mode="replicate").to(th.uint8)
    offsets = []
    for i in range(4):
        found = [(y, x) for y in range(5) for x in range(5)
                 if th.equal(out[i], padded[i, :, y:y + 10, x:x + 10])]
        assert len(found) == 1  # a crop of its own padded image, nothing else
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # each image draws its own shift
