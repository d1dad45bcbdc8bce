"""BatchNorm folding: the per-channel affine map of an inference-mode BN pushed into the layer before it."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..layers import channel_shape, facts_for, main_kernel
from .rewrite import GraphInfo, clone_layer, rebuild


def output_channel_shape(layer, kernel_shape) -> tuple:
    """The shape a per-output-channel vector takes to broadcast against the layer's main kernel (the registry's
    ``channel_shape`` of ``main_kernel``; kept for callers that hold only the kernel's shape)."""
    return channel_shape(layer, main_kernel(layer), kernel_shape)


def bn_affine(bn, xp=ops):
    """(scale, shift) of an inference-mode BatchNorm: y = x·scale + shift, per channel."""
    gamma = bn.gamma if bn.scale else xp.ones_like(bn.moving_variance)
    beta = bn.beta if bn.center else xp.zeros_like(bn.moving_mean)
    if xp is ops:  # γ·rsqrt(σ² + ε), as the converter computes it (it rewrites γ / sqrt to that): the same float32
        scale = gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
    else:
        scale = gamma / xp.sqrt(bn.moving_variance + bn.epsilon)
    return scale, beta - bn.moving_mean * scale


def is_foldable_bn(bn, layer) -> bool:
    """Whether BatchNorm ``bn`` folds into ``layer`` before it: the registry says the layer folds BatchNorms
    (``folds_batchnorm``); the instance must normalize the last axis, be channels_last and have no activation of its
    own between kernel and BN."""
    return (isinstance(bn, layers.BatchNormalization) and bn.axis in (-1, len(bn.input.shape) - 1)
            and facts_for(layer).folds_batchnorm
            and getattr(layer, "data_format", "channels_last") == "channels_last"
            and getattr(layer, "activation", None) in (None, keras.activations.linear))


def folded_weights(layer, bn) -> dict:
    """Numpy kernel and bias of ``layer`` with ``bn`` folded in, keyed by the layer's weight names."""
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
    """A new model in which every BatchNorm that directly follows a conv, depthwise, dense or transposed conv (and is
    its only consumer) is folded into that layer. Inference outputs are unchanged up to float rounding."""

    def transform(rb, node, args, kwargs):
        layer = node.operation
        nxt = rb.info.sole_consumer(node)
        if nxt is None or not is_foldable_bn(nxt.operation, layer):
            return None
        bn = nxt.operation
        new = clone_layer(layer, use_bias=True, name=layer.name)
        out = new(*args, **kwargs)
        weights = folded_weights(layer, bn)
        new.set_weights([weights[w.path.split("/")[-1]] for w in new.weights])
        rb.absorb(nxt)
        return out

    return rebuild(model, transform)


__all__ = ["bn_affine", "fold_batchnorm", "folded_weights", "is_foldable_bn", "output_channel_shape", "GraphInfo"]
