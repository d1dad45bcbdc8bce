"""BatchNorm folding: the per-channel affine map of an inference-mode BN pushed into the layer before it."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..layers import channel_shape, facts_for, main_kernel
from .rewrite import GraphInfo, clone_layer, rebuild


def output_channel_shape(layer, kernel_shape) -> tuple:
    """Gives the shape in which a per-output-channel vector broadcasts against a layer's main kernel.

    Kept for callers that hold only the kernel's shape; it is the registry's ``channel_shape`` of ``main_kernel``.

    Args:
        layer: A layer with kernels in the layer registry (Dense, a convolution, a custom layer that declares them).
        kernel_shape: The shape of its main kernel.

    Returns:
        A tuple of the kernel's rank: ``(1, ..., 1, c_out)`` for a kernel with output channels last,
        ``(1, ..., c_in, multiplier)`` for a depthwise kernel, ``(1, ..., c_out, 1)`` for a transposed convolution's.
    """
    return channel_shape(layer, main_kernel(layer), kernel_shape)


def bn_affine(bn, xp=ops):
    """Gives the per-channel affine map of an inference-mode BatchNorm: ``y = x·scale + shift``.

    Args:
        bn: A built ``BatchNormalization`` layer. Not changed.
        xp: The namespace to compute with: ``keras.ops`` (the default; ``scale = γ·rsqrt(σ² + ε)`` in float32, as the
            TFLite converter computes it) or one with ``ones_like``, ``zeros_like`` and ``sqrt`` (numpy-like).

    Returns:
        ``(scale, shift)``, one value per channel each.
    """
    gamma = bn.gamma if bn.scale else xp.ones_like(bn.moving_variance)
    beta = bn.beta if bn.center else xp.zeros_like(bn.moving_mean)
    if xp is ops:  # γ·rsqrt(σ² + ε), as the converter computes it (it rewrites γ / sqrt to that): the same float32
        scale = gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
    else:
        scale = gamma / xp.sqrt(bn.moving_variance + bn.epsilon)
    return scale, beta - bn.moving_mean * scale


def is_foldable_bn(bn, layer) -> bool:
    """Tells whether a BatchNorm can be folded into the layer before it.

    Args:
        bn: The layer that reads ``layer``'s output (any layer; it must have been called).
        layer: The layer before it.

    Returns:
        True if ``bn`` is a ``BatchNormalization`` on the last axis, the layer registry says ``layer`` folds
        BatchNorms (``folds_batchnorm``: Dense and the convolutions), and ``layer`` is channels_last with no activation
        of its own between its kernel and the BatchNorm; else False.
    """
    return (
        isinstance(bn, layers.BatchNormalization)
        and bn.axis in (-1, len(bn.input.shape) - 1)
        and facts_for(layer).folds_batchnorm
        and getattr(layer, "data_format", "channels_last") == "channels_last"
        and getattr(layer, "activation", None) in (None, keras.activations.linear)
    )


def folded_weights(layer, bn) -> dict:
    """Computes a layer's kernel and bias with the BatchNorm after it folded in.

    Args:
        layer: A built layer whose registry facts fold BatchNorms (see `is_foldable_bn`). Not changed.
        bn: The built ``BatchNormalization`` that follows it. Not changed.

    Returns:
        ``{weight name: numpy array}`` for every weight of ``layer``: the main kernel scaled per output channel, and
        ``"bias"`` (added where the layer has none) equal to ``bias·scale + shift``.
    """
    scale, shift = (np.asarray(v) for v in bn_affine(bn, xp=_NumpyOps))
    out = {w.path.split("/")[-1]: np.asarray(w) for w in layer.weights}
    name = main_kernel(layer)
    kernel = out[name]
    out[name] = kernel * scale.reshape(channel_shape(layer, name, kernel.shape))
    bias = out.get("bias", np.zeros_like(shift))
    out["bias"] = bias * scale + shift
    return out


class _NumpyOps:
    ones_like = staticmethod(np.ones_like)
    zeros_like = staticmethod(np.zeros_like)

    @staticmethod
    def sqrt(x):
        return np.sqrt(np.asarray(x))


def fold_batchnorm(model) -> keras.Model:
    """Makes a copy of a model with every foldable BatchNorm folded into the layer before it.

    A BatchNorm is folded where it directly follows a conv, depthwise, dense or transposed conv layer, is that layer's
    only reader, neither is called more than once (a shared layer), and `is_foldable_bn` holds; the layer gets
    ``use_bias=True`` and the folded weights. Nested models are folded too. Inference outputs are unchanged up to
    float rounding; training no longer uses batch statistics.

    Args:
        model: A Functional or Sequential model. Not changed.

    Returns:
        A new Keras model without the folded BatchNorm layers.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        folded = keras_eff.graph.fold_batchnorm(model)
        np.testing.assert_allclose(folded.predict(x), model.predict(x), atol=1e-4)
        ```
    """

    def transform(rb, node, args, kwargs):
        layer = node.operation
        nxt = rb.info.sole_consumer(node)
        if nxt is None or not is_foldable_bn(nxt.operation, layer):
            return None
        if rb.info.calls(layer) != 1 or rb.info.calls(nxt.operation) != 1:
            return None  # a layer called several times shares its kernel between the calls: folding would change all
        bn = nxt.operation
        new = clone_layer(layer, use_bias=True, name=layer.name)
        out = new(*args, **kwargs)
        weights = folded_weights(layer, bn)
        new.set_weights([weights[w.path.split("/")[-1]] for w in new.weights])
        rb.absorb(nxt)
        return out

    return rebuild(model, transform)


__all__ = ["bn_affine", "fold_batchnorm", "folded_weights", "is_foldable_bn", "output_channel_shape", "GraphInfo"]
