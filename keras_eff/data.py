"""Sample inputs, whatever form the user hands them in: one normaliser for every API that takes data.

``calibrate``, the PTQ techniques (``bias_correction``, ``adaround``, ``auto_quant``, ``divergence``), mixed precision
and compression all take "typical inputs" through ``model_samples``. Accepted: a numpy array (anything
``np.asarray`` turns into numbers, a ``tf.Tensor`` say), an ``(x, y)`` or ``(x, y, sample_weight)`` tuple of arrays,
a ``tf.data.Dataset`` of ``x`` or ``(x, y)`` elements, batched or not, a ``keras.utils.PyDataset``, and a Python
generator or iterator of ``x`` or ``(x, y)`` batches. Only the inputs ``x`` are kept, as float32 rows, at most
``max_samples`` of them (an iterator is read no further than that).
"""

from __future__ import annotations

import collections.abc
import numbers
from typing import Literal, overload

import keras
import numpy as np

from tflite_export import check_samples

ACCEPTED = (
    "a numpy array of inputs (or an (x, y) tuple of arrays), a tf.data.Dataset of x or (x, y) elements "
    "(batched or not), a keras.utils.PyDataset, or a generator/iterator of x or (x, y) batches"
)

_INFINITE = -1  # tf.data.INFINITE_CARDINALITY (read without importing TensorFlow here)


@overload
def check_count(value, name: str, allow_none: Literal[False] = False, what: str = "") -> int: ...
@overload
def check_count(value, name: str, allow_none: bool, what: str = "") -> int | None: ...
def check_count(value, name: str, allow_none: bool = False, what: str = "") -> int | None:
    """``value`` as an int of at least 1 (None passes where ``allow_none``); else a ValueError or TypeError naming
    ``name`` and the allowed range (``what`` says what the number counts)."""
    if value is None and allow_none:
        return None
    allowed = "a whole number of at least 1" + (" or None (all)" if allow_none else "")
    about = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and float(value) >= 1:
            return int(float(value))
        raise TypeError(f"{name} must be {allowed}{about}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}={value!r} is out of range: it must be {allowed}{about}")
    return int(value)


def _x_of(item):
    """The inputs of a dataset element or batch: ``x`` of ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``."""
    if isinstance(item, tuple) and 1 <= len(item) <= 3:
        return item[0]
    return item


def _rank(expected_shape):
    return None if expected_shape is None else len(tuple(expected_shape)) + 1


def _gather(batches, what, expected_shape, max_samples, source, bounded=True):
    """Concatenates the ``x`` of each element of ``batches`` (whole batches, or single samples where their rank is
    one less than a batch's) until ``max_samples`` rows are held."""
    if max_samples is None and not bounded:
        raise ValueError(f"{what}: {source} never ends; give max_samples, or a finite one (dataset.take(n))")
    rank = _rank(expected_shape)
    rows, count = [], 0
    for item in batches:
        x = _numeric(_x_of(item), what, source)
        if rank is not None and x.ndim == rank - 1:
            x = x[None]  # one sample of an unbatched dataset
        if x.ndim == 0:
            raise ValueError(
                f"{what}: {source} yielded a scalar; each element must be a batch of inputs (or one "
                f"input) shaped like the model input"
            )
        rows.append(x)
        count += len(x)
        if max_samples is not None and count >= max_samples:
            break
    if not rows:
        shape = tuple(0 if d is None else d for d in (expected_shape or ()))
        return np.zeros((0,) + shape, np.float32)
    try:
        return np.concatenate(rows)
    except ValueError as err:
        raise ValueError(
            f"{what}: the batches of {source} differ in shape ({rows[0].shape} then "
            f"{next(r.shape for r in rows if r.shape[1:] != rows[0].shape[1:])}): {err}"
        ) from None


def _numeric(x, what, source="it"):
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nesting
        raise TypeError(f"{what} must be {ACCEPTED}; {source} could not be read as one numeric array ({err})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(
            f"{what} must be {ACCEPTED}; got {type(x).__name__}"
            + (f" holding dtype {arr.dtype}" if isinstance(x, np.ndarray) or arr.ndim else "")
            + (f" from {source}" if source != "it" else "")
        )
    return arr


def as_samples(data, what: str = "data", expected_shape=None, max_samples: int | None = None) -> np.ndarray:
    """The inputs in ``data`` as one numpy array (not yet checked; see ``model_samples``), at most ``max_samples``
    rows. ``expected_shape`` (the per-sample shape, None entries for any size) tells single samples from batches
    and an ``(x, y)`` tuple from an array."""
    rank = _rank(expected_shape)
    if data is None:
        raise ValueError(f"{what} is required: give a few hundred typical inputs ({ACCEPTED})")
    if hasattr(data, "as_numpy_iterator") and hasattr(data, "element_spec"):  # tf.data.Dataset
        bounded = int(data.cardinality()) != _INFINITE
        return _gather(data.as_numpy_iterator(), what, expected_shape, max_samples, "the tf.data.Dataset", bounded)
    if isinstance(data, keras.utils.PyDataset):
        n = data.num_batches

        def batches():
            i = 0
            while n is None or i < n:
                yield data[i]
                i += 1

        return _gather(batches(), what, expected_shape, max_samples, f"the {type(data).__name__}", n is not None)
    if isinstance(data, collections.abc.Iterator):  # generators included
        return _gather(data, what, expected_shape, max_samples, f"the {type(data).__name__}")
    if isinstance(data, (tuple, list)) and 2 <= len(data) <= 3:
        first = data[0]
        if rank is not None and np.ndim(first) == rank:
            return _numeric(first, what)[:max_samples]
        if rank is None and isinstance(data, tuple):
            try:
                np.asarray(data, dtype=np.float32)
            except (ValueError, TypeError):  # inhomogeneous: an (x, y) pair
                return _numeric(first, what)[:max_samples]
    if isinstance(data, (dict, str, bytes, set)) or callable(data):
        raise TypeError(f"{what} must be {ACCEPTED}; got {type(data).__name__}")
    return _numeric(data, what)[:max_samples]


def model_samples(model, data, what: str = "data", max_samples: int | None = None, owner: str | None = None):
    """``data`` (any form ``as_samples`` takes) as float32 rows for the single input of ``model``: checked against
    the model's input shape, non-empty and finite, at most ``max_samples`` of them. Raises ValueError or TypeError
    naming ``what`` and the model."""
    inputs = getattr(model, "inputs", None)  # a subclassed model declares no input shape
    if inputs and len(inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(inputs)} inputs; {what} is supported for single-input models")
    expected = tuple(inputs[0].shape[1:]) if inputs else None
    x = as_samples(data, what, expected, max_samples)
    return check_samples(x, expected, what, owner or f"model {model.name!r}", max_samples)


def model_input_samples(model, data, what: str = "data", max_samples: int | None = None) -> list:
    """``data`` as one float32 array per input of ``model``. A single-input model takes any form ``model_samples``
    takes; a model with several inputs takes a list or tuple of arrays in the order of ``model.inputs``, or a dict
    keyed by the input names, as Keras does (either may be paired with labels: ``(xs, y)``), each checked against its
    input, all with the same number of samples."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) == 1:
        return [model_samples(model, data, what, max_samples)]
    n = len(inputs)
    names = [t.name for t in inputs]
    if (
        isinstance(data, tuple)
        and len(data) in (2, 3)
        and isinstance(data[0], (list, tuple, dict))
        and len(data[0]) == n
    ):
        data = data[0]  # (xs, y) or (xs, y, sample_weight)
    if isinstance(data, dict):
        if sorted(data) != sorted(names):
            raise ValueError(
                f"model {model.name!r} has inputs {names}; {what} is keyed {sorted(data)}: give one array per "
                f"input name"
            )
        data = [data[name] for name in names]
    if not isinstance(data, (list, tuple)) or len(data) != n:
        raise ValueError(
            f"model {model.name!r} has {n} inputs ({', '.join(names)}); {what} must be a list of {n} arrays in that "
            f"order or a dict keyed by those names, one row per sample in each; got {type(data).__name__}"
            + (f" of {len(data)}" if isinstance(data, (list, tuple)) else "")
        )
    arrays = [
        check_samples(_numeric(x, f"{what}[{i}]"), tuple(t.shape[1:]), f"{what}[{i}]", f"input {t.name!r}", max_samples)
        for i, (x, t) in enumerate(zip(data, inputs))
    ]
    counts = [len(a) for a in arrays]
    if len(set(counts)) > 1:
        raise ValueError(f"{what} holds {counts} samples for the {n} inputs of model {model.name!r}: give each as many")
    return arrays


__all__ = ["ACCEPTED", "as_samples", "check_count", "model_input_samples", "model_samples"]
