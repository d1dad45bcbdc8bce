"""BatchNorm folding: the per-channel affine map of an inference-mode BN pushed into the layer before it."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .rewrite import GraphInfo, clone_layer, rebuild

# Layers whose output channels a following BatchNorm can be folded into.
FOLDABLE = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D, layers.Dense,
            layers.Conv2DTranspose, layers.SeparableConv2D)


def kernel_name(layer) -> str:
    """The name of the weight that maps inputs to output channels (the pointwise half of a separable conv)."""
    return "pointwise_kernel" if isinstance(layer, layers.SeparableConv2D) else "kernel"


def output_channel_shape(layer, kernel_shape) -> tuple:
    """The shape a per-output-channel vector takes to broadcast against the layer's kernel."""
    if isinstance(layer, layers.DepthwiseConv2D):  # (kh, kw, c_in, multiplier): output channel c*m + j
        return (1,) * (len(kernel_shape) - 2) + tuple(kernel_shape[-2:])
    if isinstance(layer, (layers.Conv2DTranspose, layers.Conv1DTranspose, layers.Conv3DTranspose)):
        return (1,) * (len(kernel_shape) - 2) + (kernel_shape[-2], 1)
    return (1,) * (len(kernel_shape) - 1) + (kernel_shape[-1],)


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
    return (isinstance(bn, layers.BatchNormalization) and bn.axis in (-1, len(bn.input.shape) - 1)
            and isinstance(layer, FOLDABLE) and getattr(layer, "data_format", "channels_last") == "channels_last"
            and getattr(layer, "activation", None) in (None, keras.activations.linear))


def folded_weights(layer, bn) -> dict:
    """Numpy kernel and bias of ``layer`` with ``bn`` folded in, keyed by the layer's weight names."""
    scale, shift = (np.asarray(v) for v in bn_affine(bn, xp=_NumpyOps))
    out = {w.path.split("/")[-1]: np.asarray(w) for w in layer.weights}
    name = kernel_name(layer)
    kernel = out[name]
    out[name] = kernel * scale.reshape(output_channel_shape(layer, kernel.shape))
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


__all__ = ["FOLDABLE", "bn_affine", "fold_batchnorm", "folded_weights", "is_foldable_bn", "kernel_name",
           "output_channel_shape", "GraphInfo"]
