"""Channel bookkeeping for the layers PTQ rescales and corrects: Conv2D, DepthwiseConv2D (multiplier 1), Dense.

All numpy: kernels in Keras layout. "Output channel" c of a depthwise kernel (kh, kw, c, 1) is its input channel c.
Which layer is which comes from the registry: one kernel, laid out "depthwise" (kh, kw, c, multiplier) or "last"
((in, out) for a dense kernel, (kh, kw, in, out) for a 2-D convolution).
"""

from __future__ import annotations

import numpy as np

from ..layers import facts_for


def _layout(layer) -> str | None:
    """The layout of the layer's one kernel, ``kernel`` (None with none, or with several: a separable convolution)."""
    kernels = facts_for(layer).kernels
    return kernels.get("kernel") if len(kernels) == 1 else None


def _depthwise(layer) -> bool:
    return _layout(layer) == "depthwise"


def _dense(layer) -> bool:
    return _layout(layer) == "last" and len(layer.kernel.shape) == 2


def is_scalable(layer) -> bool:
    """A layer whose input and output channels cross-layer scaling can rescale: a dense kernel, or a 2-D
    convolution (groups=1) or depthwise convolution (multiplier 1), channels_last."""
    layout = _layout(layer)
    if layout not in ("last", "depthwise") or facts_for(layer).channels not in ("produce", "follow"):
        return False
    rank = len(layer.kernel.shape)
    if layout == "depthwise":
        return rank == 4 and layer.depth_multiplier == 1 and layer.data_format == "channels_last"
    if rank == 2:
        return True
    return rank == 4 and getattr(layer, "groups", 1) == 1 and layer.data_format == "channels_last"


def out_shape(layer, kernel) -> tuple:
    """Broadcast shape of a per-output-channel vector against the kernel."""
    if _depthwise(layer):
        return (1, 1, kernel.shape[2], 1)
    return (1,) * (kernel.ndim - 1) + (kernel.shape[-1],)


def in_shape(layer, kernel) -> tuple:
    """Broadcast shape of a per-input-channel vector against the kernel."""
    if _dense(layer):
        return (kernel.shape[0], 1)
    return (1, 1, kernel.shape[2], 1)


def out_ranges(layer, kernel) -> np.ndarray:
    """max |w| per output channel."""
    axis = (0, 1, 3) if _depthwise(layer) else tuple(range(kernel.ndim - 1))
    return np.abs(kernel).max(axis=axis)


def in_ranges(layer, kernel) -> np.ndarray:
    """max |w| per input channel."""
    axis = (1,) if _dense(layer) else (0, 1, 3)
    return np.abs(kernel).max(axis=axis)


def input_sum(layer, kernel, vector) -> np.ndarray:
    """Per output channel: the layer's (bias-free) response to a constant input ``vector`` per input channel,
    ignoring borders: Σ over taps and inputs of w·v."""
    v = np.asarray(vector, np.float64)
    if _dense(layer):
        return v @ kernel
    if _depthwise(layer):
        return kernel.sum(axis=(0, 1, 3)) * v
    return np.einsum("hwio,i->o", kernel, v)


def padding_free(layer) -> bool:
    """Whether a constant input shift reaches every output position alike (no zero padding seen by the kernel)."""
    if _dense(layer):
        return True
    return layer.padding == "valid" or tuple(layer.kernel_size) == (1, 1)


def kernel_and_bias(layer):
    kernel = np.asarray(layer.kernel, np.float64)
    bias = (
        np.asarray(layer.bias, np.float64)
        if layer.use_bias
        else np.zeros(kernel.shape[2] if _depthwise(layer) else kernel.shape[-1])
    )
    return kernel, bias
