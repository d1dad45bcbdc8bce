"""strip: the one step that turns a model trained with keras-eff wrappers back into a plain Keras model.

The hook is deliberately small: every layer in the graph that has a ``strip_layer()`` method (pruning's
``PruneWrapper`` now, clustering and quantization wrappers later) is replaced by what that method returns: a plain,
already built Keras layer that holds the final weights (masks applied, centroids gathered, ...) and takes the same
inputs. Everything else is copied. The input model is left untouched.
"""

from __future__ import annotations

import keras

from .graph import rebuild


def _strip_transform(rb, node, args, kwargs):
    hook = getattr(node.operation, "strip_layer", None)
    if not callable(hook):
        return None
    layer = hook()
    if not isinstance(layer, keras.layers.Layer) or not layer.built:
        raise TypeError(f"{type(node.operation).__name__}.strip_layer() must return a built Keras layer, got "
                        f"{type(layer).__name__}")
    return layer(*args, **kwargs)


def strip(model, remove_pruned_channels: bool = False) -> keras.Model:
    """A plain Keras model with the final weights of every keras-eff wrapper (see the module docstring).

    With ``remove_pruned_channels=True``, filters pruned with ``structure="channels"`` are physically removed, with
    the matching BatchNorm/depthwise channels and the inputs of the layers after them
    (``keras_eff.pruning.strip_channels``): the result is smaller and faster, with the same outputs.
    """
    if remove_pruned_channels:
        from .pruning.strip_channels import strip_channels

        return strip_channels(model)
    return rebuild(model, _strip_transform)
