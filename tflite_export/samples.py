"""Checking arrays of sample inputs (representative, calibration or compression data) against a model's input."""

from __future__ import annotations

import numpy as np


def check_samples(x, expected_shape, what: str, owner: str = "the model", max_samples: int | None = None):
    """``x`` as float32 rows for an input of per-sample shape ``expected_shape`` (None entries match anything; a
    None shape skips the check), at most ``max_samples`` of them.

    Raises ValueError naming ``what`` (e.g. "calibration data") and ``owner`` (e.g. "model 'cnn'") when the shape
    is wrong, there are no samples, or any value is NaN or infinite.
    """
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{what} must be a numeric array of model inputs, got dtype {x.dtype}")
    if expected_shape is not None:
        expected = tuple(expected_shape)
        if x.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
            raise ValueError(f"{what} has shape {x.shape}, but {owner} expects "
                             f"(n, {', '.join(str(e) for e in expected)})")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{what} is empty: give a few hundred typical inputs")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds NaN or infinite values")
    return x[:max_samples].astype(np.float32)
