"""Channel bookkeeping for the layers PTQ rescales and corrects: Conv2D, DepthwiseConv2D (multiplier 1), Dense.

All numpy: kernels in Keras layout. "Output channel" c of a depthwise kernel (kh, kw, c, 1) is its input channel c.
"""

from __future__ import annotations

import numpy as np
from keras import layers


def is_scalable(layer) -> bool:
    """A layer whose input and output channels cross-layer scaling can rescale."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return layer.depth_multiplier == 1 and layer.data_format == "channels_last"
    if isinstance(layer, (layers.Conv2DTranspose, layers.SeparableConv2D)):
        return False
    if isinstance(layer, layers.Conv2D):
        return layer.groups == 1 and layer.data_format == "channels_last"
    return isinstance(layer, layers.Dense) and len(layer.kernel.shape) == 2


def out_shape(layer, kernel) -> tuple:
    """Broadcast shape of a per-output-channel vector against the kernel."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return (1, 1, kernel.shape[2], 1)
    return (1,) * (kernel.ndim - 1) + (kernel.shape[-1],)


def in_shape(layer, kernel) -> tuple:
    """Broadcast shape of a per-input-channel vector against the kernel."""
    if isinstance(layer, layers.Dense):
        return (kernel.shape[0], 1)
    return (1, 1, kernel.shape[2], 1)


def out_ranges(layer, kernel) -> np.ndarray:
    """max |w| per output channel."""
    axis = (0, 1, 3) if isinstance(layer, layers.DepthwiseConv2D) else tuple(range(kernel.ndim - 1))
    return np.abs(kernel).max(axis=axis)


def in_ranges(layer, kernel) -> np.ndarray:
    """max |w| per input channel."""
    axis = (1,) if isinstance(layer, layers.Dense) else (0, 1, 3)
    return np.abs(kernel).max(axis=axis)


def input_sum(layer, kernel, vector) -> np.ndarray:
    """Per output channel: the layer's (bias-free) response to a constant input ``vector`` per input channel,
    ignoring borders: Σ over taps and inputs of w·v."""
    v = np.asarray(vector, np.float64)
    if isinstance(layer, layers.Dense):
        return v @ kernel
    if isinstance(layer, layers.DepthwiseConv2D):
        return kernel.sum(axis=(0, 1, 3)) * v
    return np.einsum("hwio,i->o", kernel, v)


def padding_free(layer) -> bool:
    """Whether a constant input shift reaches every output position alike (no zero padding seen by the kernel)."""
    if isinstance(layer, layers.Dense):
        return True
    return layer.padding == "valid" or tuple(layer.kernel_size) == (1, 1)


def kernel_and_bias(layer):
    kernel = np.asarray(layer.kernel, np.float64)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(
        kernel.shape[2] if isinstance(layer, layers.DepthwiseConv2D) else kernel.shape[-1])
    return kernel, bias
