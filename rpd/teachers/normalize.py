"""Action normalisation (pure functions). OpenVLA's convention: q01/q99 bounds -> [-1, 1]."""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def action_stats(actions: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension statistics of actions [N, A]: q01, q99, mean, std (lists of A floats)."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or len(actions) == 0:
        raise ValueError(f"actions must be a non-empty [N, A] array, got {actions.shape}")
    return dict(
        q01=np.quantile(actions, 0.01, axis=0).tolist(),
        q99=np.quantile(actions, 0.99, axis=0).tolist(),
        mean=actions.mean(axis=0).tolist(),
        std=actions.std(axis=0).tolist(),
    )


def normalize(actions: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    """Map [..., A] actions to [-1, 1]: q01 -> -1, q99 -> 1, clipped outside.

    A dimension with q99 == q01 (constant in the data) maps to 0.
    """
    q01, q99 = np.asarray(q01, np.float32), np.asarray(q99, np.float32)
    span = q99 - q01
    out = 2.0 * (np.asarray(actions, np.float32) - q01) / np.maximum(span, EPS) - 1.0
    out = np.where(span > EPS, out, 0.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def unnormalize(actions: np.ndarray, q01: np.ndarray, q99: np.ndarray) -> np.ndarray:
    """Inverse of `normalize` for values in [-1, 1] (inputs are clipped to [-1, 1] first).

    A constant dimension (q99 == q01) returns q01.
    """
    q01, q99 = np.asarray(q01, np.float32), np.asarray(q99, np.float32)
    x = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
    return ((x + 1.0) * 0.5 * (q99 - q01) + q01).astype(np.float32)
