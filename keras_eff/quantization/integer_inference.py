"""Integer inference: quantized layers computed at inference the way LiteRT's default int8 kernels compute them.

LiteRT runs int8 files on its XNNPACK delegate by default. Measured op by op (docs/parity.md): its CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED sum an exact int32 accumulator and requantize it in float32, rounding half to
even, ``q = round(acc · (s_in·s_w / s_out)) + z_out``; its MEAN rounds the mean of the window the same way. The float
simulation (fake-quant in float32) gets those values right to ~1e-5 LSB, yet on deep networks that is not enough:
the rare value that float error or a different tie rule puts on the other side of a .5 changes one LSB, and
MobileNets amplify such flips (one in 10⁴ at the first layers became 15% of outputs off by more than 1 LSB at the
logits). So at inference ``QuantizeWrapper`` takes this path: integers read off the grids, accumulators computed
exactly (float64 holds any int32 sum exactly), and XNNPACK's rounding.

Training keeps the float path with its straight-through gradients, and the exported graph is the fake-quant graph
only: this path is skipped while ``tflite_export.is_exporting()`` (``to_tflite`` and ``to_onnx`` trace inside
``tflite_export.exporting()``; do the same around your own ``model.export``). Where the grids are not known (an
input with no range, calibration, activation bits other than 8) the float path runs.
"""

from __future__ import annotations

import math

from keras import layers, ops

import tflite_export as te

# Layer types whose integer form is emulated: XNNPACK's fp32-requantized conv, depthwise conv and fully connected.
LINEAR = (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)
MEANS = (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)


def active(training, *quantizers) -> bool:
    """Whether this call computes with integers: inference, not exporting, every grid known and 8-bit."""
    if training or te.is_exporting():
        return False
    return all(q is not None and not q.calibrating and q.bits == 8 for q in quantizers)


def integers(x, scale):
    """Values on a grid of step ``scale`` (zero on the grid) as the integers q − z, in float64."""
    return ops.round(ops.cast(x, "float64") / ops.cast(scale, "float64"))


def round_half_away(v):
    return ops.sign(v) * ops.floor(ops.abs(v) + 0.5)


def requantize(acc, multiplier):
    """XNNPACK's fp32 requantization: the accumulator in float32 times the float32 multiplier, half to even."""
    return ops.round(ops.cast(acc, "float32") * ops.cast(multiplier, "float32"))


def mean(layer, x, in_scale, out_scale):
    """A global average pooling as XNNPACK's MEAN computes it: the exact sum of the input's integers, times
    s_in / (s_out · n) in float32, rounded half to even. Returns the value on the output grid."""
    axes = list(range(1, len(x.shape) - 1))
    acc = ops.sum(integers(x, in_scale), axis=axes, keepdims=bool(layer.keepdims))
    dims = [x.shape[a] for a in axes]
    if None in dims:  # spatial size known only at run time
        shape = ops.shape(x)
        n = ops.cast(ops.prod(ops.stack([shape[a] for a in axes])), "float32")
    else:
        n = float(math.prod(dims))
    return requantize(acc, in_scale / (out_scale * n)) * out_scale
