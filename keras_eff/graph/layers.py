"""Facts about layers and calls that several techniques need: the layers of a model's graph and those a custom layer
hides inside, what an activation layer computes, and calling a layer with some of its weights replaced by other
values."""

from __future__ import annotations

import keras
from keras import layers

from .rewrite import GraphInfo


def graph_layers(model) -> list:
    """The layers of the model's graph (nested models included, not the models themselves), each once.

    Args:
        model: A Functional or Sequential model.

    Returns:
        The layers in graph order.
    """
    out, seen = [], set()

    def walk(m):
        for node in GraphInfo.of(m).nodes:
            op = node.operation
            if isinstance(op, keras.Model):
                walk(op)
            elif isinstance(op, layers.Layer) and id(op) not in seen:
                seen.add(id(op))
                out.append(op)

    walk(model)
    return out


def hidden_layers(model, predicate, reached=None) -> dict:
    """The custom layers of a model's graph that call layers a graph rewrite does not reach: ``{custom layer name:
    (its class name, [the names of its sublayers, at any depth, for which predicate holds])}``.

    Args:
        model: A Functional or Sequential model.
        predicate: ``predicate(layer) -> bool``: a layer the technique acts on (``is_prunable``, say).
        reached: ``reached(layer) -> bool`` for a graph layer the technique handles as a whole (by default
            ``predicate``); such a layer's sublayers are not listed.

    Returns:
        The dict, in graph order; empty when every such layer is in the graph.
    """
    reached = reached or predicate
    found = {}
    for layer in graph_layers(model):
        if reached(layer):
            continue
        inner = [s.name for s in layer._flatten_layers(include_self=False, recursive=True) if predicate(s)]
        if inner:
            found[layer.name] = (type(layer).__name__, inner)
    return found


def describe_hidden(hidden: dict) -> str:
    """Names the layers `hidden_layers` found, for a message.

    Args:
        hidden: `hidden_layers`' dict.

    Returns:
        ``"res (ResidualBlock: conv), se (SqueezeExcite: dense, dense_1)"``.
    """
    return ", ".join(f"{name} ({cls}: {', '.join(inner)})" for name, (cls, inner) in hidden.items())


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
