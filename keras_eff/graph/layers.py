"""Facts about layers and calls that several techniques need: what an activation layer computes, and calling a layer
with some of its weights replaced by other values."""

from __future__ import annotations

import keras
from keras import layers


def activation_kind(layer) -> str | None:
    """'relu', 'relu6' or 'linear' for a plain activation layer (ReLU or Activation); None for anything else."""
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
    """Calls ``layer`` with the variables in ``mapping`` [(variable, value), ...] replaced by those values.

    Variables the call updates itself (BatchNorm statistics, say) are written back, and the call's losses are added to
    ``owner``: the way a wrapper computes its layer with masked or clustered weights without touching them.
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
