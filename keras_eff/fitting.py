"""Creating a compiled model's training state before its first ``fit`` or ``evaluate`` (internal).

TensorFlow traces a ``tf.function`` twice when its first call creates variables: once creating them, once more
without. Keras 3 on the TensorFlow backend, outside a distribution strategy, defers building the optimizer, the
compiled loss and the compiled metrics to the first traced step, so every first ``fit`` traces its training step
twice, and the first ``evaluate`` after a ``compile`` its test step twice. For a quantized MobileNetV3Small that is
about 20 s spent on a second trace. :func:`build_training_state` creates that state symbolically first (what Keras
does itself under a strategy), so each step is traced once. keras-eff calls it where it compiles and trains models
itself (DONNA's trainings, :func:`keras_eff.models.compile_classifier`).
"""

from __future__ import annotations

import keras
import numpy as np


def build_training_state(model: keras.Model, x=None, y=None) -> keras.Model:
    """Create the optimizer, compiled-loss and compiled-metric variables of the compiled ``model`` now.

    Args:
        model: A compiled Keras model.
        x: Inputs (an array; the first sample is used), or None for a zero image of the model's input shape.
        y: The matching targets, or None for an integer class label.

    Returns:
        ``model``, whose first ``fit`` then traces its step once. Left as it was when Keras has no such build (another
        Keras version), when the model is not compiled, or when ``x`` is None and the input shape is not fully known.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None or not getattr(model, "compiled", False):
        return model
    if x is None:
        shapes = [tuple(t.shape[1:]) for t in getattr(model, "inputs", None) or []]
        if len(shapes) != 1 or None in shapes[0]:
            return model
        x = np.zeros((1,) + shapes[0], "float32")
    x = x[:1]
    y = np.zeros((1,), "int32") if y is None else y[:1]
    build(data_batch=(x, y))
    return model
