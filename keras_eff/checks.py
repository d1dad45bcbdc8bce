"""Checks of a user's model that several techniques share, worded the same everywhere."""

from __future__ import annotations

import keras
import numpy as np


def _leaf_layers(model):
    """The layers of ``model``, those of nested models instead of the nested models themselves."""
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def check_finite_weights(model, doing: str) -> None:
    """Raises ValueError naming the first layer (nested models searched) with a NaN or infinite weight, e.g. "layer
    'conv' of model 'cnn' has NaN or infinite values in conv/kernel: fix or retrain the model before pruning it"
    (``doing`` = "pruning it")."""
    for layer in _leaf_layers(model):
        for w in layer.weights:
            if not np.all(np.isfinite(np.asarray(w))):
                raise ValueError(
                    f"layer {layer.name!r} of model {model.name!r} has NaN or infinite values in "
                    f"{w.path}: fix or retrain the model before {doing}"
                )


__all__ = ["check_finite_weights"]
