"""Checking arrays of sample inputs (representative, calibration or compression data) against a model's input."""

from __future__ import annotations

import numpy as np


def check_samples(x, expected_shape, what: str, owner: str = "the model", max_samples: int | None = None):
    """Checks an array of sample inputs against a model input and returns it as float32.

    Args:
        x: The samples, an array-like of shape ``(n, *expected_shape)``.
        expected_shape: The per-sample shape of the input (its entries None match any size); None skips the shape
            check.
        what: What ``x`` is, for the messages (e.g. ``"calibration data"``).
        owner: Whose input it is, for the messages (e.g. ``"model 'cnn'"``).
        max_samples: The most samples kept (the first ones); None keeps all.

    Returns:
        At most ``max_samples`` rows of ``x``, as a float32 array (a copy; ``x`` is not changed).

    Raises:
        TypeError: If ``x`` is not numeric.
        ValueError: If ``x`` has the wrong shape, holds no samples, or holds NaN or infinite values; the message
            names ``what`` and ``owner``.

    Example:
        ```python
        x = tflite_export.check_samples(x_train[:500], (28, 28, 1), "calibration data", "model 'cnn'", 256)
        ```
    """
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{what} must be a numeric array of model inputs, got dtype {x.dtype}")
    if expected_shape is not None:
        expected = tuple(expected_shape)
        if x.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
            raise ValueError(
                f"{what} has shape {x.shape}, but {owner} expects (n, {', '.join(str(e) for e in expected)})"
            )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{what} is empty: give a few hundred typical inputs")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds NaN or infinite values")
    return x[:max_samples].astype(np.float32)
