"""Masks from weights: magnitude (unstructured), N:M along input channels, whole channels (filters).

Plain numpy, run on the host at update steps only. Every mask is 1.0 where a weight is kept and 0.0 where pruned.
"""

from __future__ import annotations

import numpy as np


def magnitude_mask(weights, sparsity: float) -> np.ndarray:
    """Zeros at the ``round(sparsity·n)`` weights of smallest magnitude, ones elsewhere (exact count, ties broken
    by position)."""
    w = np.abs(np.asarray(weights, dtype=np.float32)).ravel()
    k = int(round(float(sparsity) * w.size))
    mask = np.ones(w.size, np.float32)
    if k > 0:
        mask[np.argsort(w, kind="stable")[:k]] = 0.0
    return mask.reshape(np.shape(weights))


def nm_mask(kernel, n: int = 2, m: int = 4) -> np.ndarray:
    """Keeps the ``n`` largest of every ``m`` consecutive input channels (axis -2 of a Dense or conv kernel)."""
    k = np.abs(np.asarray(kernel, dtype=np.float32))
    cin = k.shape[-2]
    if cin % m:
        raise ValueError(f"{n}:{m} pruning groups input channels by {m}, but this kernel has {cin} input channels")
    moved = np.moveaxis(k, -2, -1)  # (..., cout, cin)
    groups = moved.reshape(moved.shape[:-1] + (cin // m, m))
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, np.float32)
    np.put_along_axis(keep, order[..., :n], 1.0, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, -2)


def channel_mask(scores, sparsity: float) -> np.ndarray:
    """Per-channel mask dropping the ``round(sparsity·c)`` channels of lowest score, always keeping one."""
    scores = np.asarray(scores, dtype=np.float64)
    c = scores.size
    k = min(int(round(float(sparsity) * c)), c - 1)
    mask = np.ones(c, np.float32)
    if k > 0:
        mask[np.argsort(scores, kind="stable")[:k]] = 0.0
    return mask


def channel_scores(kernel, channel_axis: int = -1) -> np.ndarray:
    """L2 norm of each output channel's weights."""
    k = np.moveaxis(np.asarray(kernel, dtype=np.float64), channel_axis, -1)
    return np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).sum(axis=0))
