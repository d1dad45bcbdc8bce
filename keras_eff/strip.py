"""strip: the one step that turns a model trained with keras-eff wrappers back into a plain Keras model.

The hook is deliberately small: every layer in the graph that has a ``strip_layer()`` method (pruning's
``PruneWrapper``, clustering's ``ClusterWrapper``) is replaced by what that method returns: a plain,
already built Keras layer that holds the final weights (masks applied, centroids gathered, ...) and takes the same
inputs. Everything else is copied. The input model is left untouched.

A wrapper whose output channels were pruned says which it keeps with a second hook, ``kept_channels()`` (indices, or
None); ``remove_pruned_channels=True`` then removes the others physically (``keras_eff.graph.remove_channels``).
strip needs no technique: it imports only ``keras_eff.graph``.
"""

from __future__ import annotations

import keras

from .graph import rebuild
from .graph.channels import remove_channels


def _strip_transform(rb, node, args, kwargs):
    hook = getattr(node.operation, "strip_layer", None)
    if not callable(hook):
        return None

    def plain(a, k):  # once for a wrapper called several times: the calls keep sharing the plain layer
        layer = hook()
        if not isinstance(layer, keras.layers.Layer) or not layer.built:
            raise TypeError(
                f"{type(node.operation).__name__}.strip_layer() must return a built Keras layer, got "
                f"{type(layer).__name__}"
            )
        return layer, layer(*a, **k)

    return rb.call_shared(node.operation, args, kwargs, plain)


def kept_channels(model) -> dict:
    """Collects the output channels each wrapper keeps, from its ``kept_channels()`` hook (nested models included).

    Args:
        model: A Keras model. Not changed.

    Returns:
        ``{wrapped layer's name: indices of the output channels kept}`` for every wrapper whose hook returns
        indices.
    """
    keep = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        hook = getattr(layer, "kept_channels", None)
        kept = hook() if callable(hook) else None
        if kept is not None:
            keep[layer.layer.name if hasattr(layer, "layer") else layer.name] = kept
    return keep


def strip(model, remove_pruned_channels: bool = False) -> keras.Model:
    """Turns a model trained with keras-eff wrappers back into a plain Keras model with their final weights.

    Every layer with a ``strip_layer()`` method (pruning's ``PruneWrapper``, clustering's ``ClusterWrapper``) is
    replaced by the plain layer it returns (masks applied, centroids gathered); every other layer is copied (see the
    module docstring).

    Args:
        model: A Functional or Sequential model holding keras-eff wrappers (or none). Not changed.
        remove_pruned_channels: Also remove physically the filters pruned with ``structure="channels"``, with the
            matching BatchNorm/depthwise channels and the inputs of the layers after them: the result is smaller and
            faster, with the same outputs.

    Returns:
        A new plain Keras model.

    Raises:
        TypeError: If a wrapper's ``strip_layer()`` does not return a built Keras layer.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
        ValueError: With ``remove_pruned_channels``, if pruned channels reach a layer that cannot drop them, or a merge
            joins inputs whose kept channels differ.

    Example:
        ```python
        final = keras_eff.strip(pruned)  # then quantize, export
        smaller = keras_eff.strip(channel_pruned, remove_pruned_channels=True)
        ```
    """
    if not remove_pruned_channels:
        return rebuild(model, _strip_transform)
    keep = kept_channels(model)
    return remove_channels(rebuild(model, _strip_transform), keep)
