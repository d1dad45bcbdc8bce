"""Checks of what the user hands to a compression: the target ratio, the sample data, the layer names."""

from __future__ import annotations

import numpy as np

from ..data import model_samples
from ..graph import functional_of


class NothingToCompressError(ValueError):
    """The model holds no layer the chosen method can compress, or the target cannot be reached."""


def check_ratio(value, name="target_ratio") -> float:
    """A ratio strictly between 0 and 1, as a float."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < ratio < 1.0:
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (the fraction of the cost to keep, e.g. 0.5 "
            f"for half the MACs), got {value!r}"
        )
    return ratio


def sample_array(model, data, max_samples: int, what="data") -> np.ndarray:
    """The model's single input as a float32 array of at most ``max_samples`` rows, from any form
    ``keras_eff.data.model_samples`` takes: an array, an ``(x, y)`` pair, a ``tf.data.Dataset`` of ``x`` or
    ``(x, y)`` elements, a ``keras.utils.PyDataset`` or a generator of batches."""
    inputs = functional_of(model).inputs
    if len(inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(inputs)} inputs; compression with data supports single-input models"
        )
    return model_samples(model, data, what, max_samples)


def check_names(model, names, what) -> None:
    """Raises where ``names`` holds a layer name the model lacks, listing the model's layers."""
    known = {layer.name for layer in functional_of(model).layers}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise ValueError(
            f"{what} names {', '.join(map(repr, unknown))}, not layers of model {model.name!r}; its "
            f"layers are: {', '.join(sorted(known))}"
        )


def check_finite_weights(layer) -> None:
    for w in layer.weights:
        if not np.all(np.isfinite(np.asarray(w))):
            raise ValueError(
                f"layer {layer.name!r} has NaN or infinite values in {w.path!r}: compress a model with finite weights"
            )


__all__ = ["NothingToCompressError", "check_finite_weights", "check_names", "check_ratio", "sample_array"]
