"""Facts about layers and calls that several techniques need: what an activation layer computes, and calling a layer
with some of its weights replaced by other values."""

from __future__ import annotations

import keras
from keras import layers


def activation_kind(layer) -> str | None:
    """Names what a plain activation layer computes, for the techniques that fuse activations.

    Args:
        layer: Any Keras layer.

    Returns:
        ``"relu"`` or ``"relu6"`` for a ``ReLU`` layer without negative slope or threshold and with no cap or a cap of
        6; ``"relu"``, ``"relu6"`` or ``"linear"`` for an ``Activation`` layer with that activation; None for anything
        else.
    """
    if isinstance(layer, layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if isinstance(layer, layers.Activation):
        name = keras.activations.serialize(layer.activation)
        return name if name in ("relu", "relu6", "linear") else None
    return None


def call_with_values(owner, layer, inputs, mapping, **kwargs):
    """Calls ``layer`` with some of its variables replaced by other values, leaving those variables unchanged.

    The way a wrapper computes its layer with masked or clustered weights. Variables the call updates itself
    (BatchNorm statistics, say) and that ``mapping`` does not replace are written back, and the call's losses are added
    to ``owner``.

    Args:
        owner: The layer (usually the wrapper) to which the call's losses are added.
        layer: The layer to call.
        inputs: The layer's inputs.
        mapping: ``[(variable, value), ...]``: variables of ``layer`` and the values the call computes with.
        **kwargs: Passed on to the layer's call (``training=`` ...).

    Returns:
        The layer's outputs.
    """
    mapped = {id(v) for v, _ in mapping}
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        outputs = layer(inputs, **kwargs)
    for v in layer.weights:
        if id(v) not in mapped:
            new = scope.get_current_value(v)
            if new is not None:
                v.assign(new)
    for loss in scope.losses:
        owner.add_loss(loss)
    return outputs
