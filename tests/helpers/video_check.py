"""A check shared by the tests that record videos."""

from __future__ import annotations

from pathlib import Path


def assert_playable(path: Path, frames: float, size: int) -> None:
    """`path` decodes to `frames` RGB frames about `size` px high showing a rendered scene."""
    import imageio.v3 as iio

    video = iio.imread(path)
    assert video.shape[0] == int(frames) and video.shape[-1] == 3
    assert abs(video.shape[1] - size) <= 16  # the encoder may pad to a macroblock multiple
    assert video.std() > 5  # a rendered scene, not a blank frame
