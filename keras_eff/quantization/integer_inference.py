"""Integer inference: quantized layers computed at inference the way LiteRT's default int8 kernels compute them.

LiteRT runs int8 files on its XNNPACK delegate by default. Measured op by op (docs/parity.md): its CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED sum an exact int32 accumulator and requantize it in float32, rounding half to
even, ``q = round(acc · (s_in·s_w / s_out)) + z_out``; its MEAN rounds the mean of the window the same way. The float
simulation (fake-quant in float32) gets those values right to ~1e-5 LSB, yet on deep networks that is not enough:
the rare value that float error or a different tie rule puts on the other side of a .5 changes one LSB, and
MobileNets amplify such flips (docs/parity.md). So at inference ``QuantizeWrapper`` takes this path: integers read
off the grids, accumulators computed exactly (float64 holds any int32 sum exactly), and XNNPACK's rounding.

Training keeps the float path with its straight-through gradients, and the exported graph is the fake-quant graph
only: ``tflite_export`` traces a model inside ``export_view(model)``, during which each wrapper computes the plain
fake-quant graph. Where the grids are not known (an input with no range, calibration, activation bits other than 8)
the float path runs.

Three kernel sets, or none (``QuantizeWrapper.integer_kernels``, a saved setting of each wrapper, set on a whole
model with ``set_integer_kernels``; None keeps the fake-quant arithmetic at inference too):
"xnnpack" (LiteRT's default), "builtin" (LiteRT without delegates: its optimized built-in kernels, whose rounding
shift breaks ties upwards) and "micro" (TFLite Micro's reference kernels, gemmlowp's rounding shift: ties away from
zero). The last two requantize with gemmlowp's ``MultiplyByQuantizedMultiplier``: a 31-bit multiplier, a rounding
doubling high multiply, then a rounding shift (two roundings).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from keras import ops

KERNELS = ("xnnpack", "builtin", "micro", None)
LITERT_KERNELS = ("xnnpack", "builtin")  # LiteRT's two sets; "micro" is TFLite Micro's


def check_kernels(kernels):
    if kernels not in KERNELS:
        raise ValueError(
            f"integer_kernels={kernels!r} must be one of {KERNELS}: 'xnnpack' (LiteRT's default), "
            f"'builtin' (LiteRT without delegates), 'micro' (TFLite Micro) or None (fake-quant "
            f"arithmetic at inference too)"
        )
    return kernels


def grids_known(*quantizers) -> bool:
    """Whether every grid is known, set and 8-bit (the integer path needs them all)."""
    return all(q is not None and not q.calibrating and q.bits == 8 for q in quantizers)


def integers(x, scale):
    """Values on a grid of step ``scale`` (zero on the grid) as the integers q − z, in float64."""
    return ops.round(ops.cast(x, "float64") / ops.cast(scale, "float64"))


def round_half_away(v):
    return ops.sign(v) * ops.floor(ops.abs(v) + 0.5)


def requantize(acc, multiplier):
    """XNNPACK's fp32 requantization: the accumulator in float32 times the float32 multiplier, half to even."""
    return ops.round(ops.cast(acc, "float32") * ops.cast(multiplier, "float32"))


def is_identity_mean(input_shape) -> bool:
    """A global average over a 1×1 window: the converter drops it, and its range with it."""
    spatial = tuple(input_shape)[1:-1]
    return bool(spatial) and all(d == 1 for d in spatial)


def mean(layer, x, in_scale, out_scale, out_zero_point, kernels="xnnpack", in_zero_point=0.0):
    """A global average pooling as LiteRT's int8 MEAN computes it. "xnnpack": ``xnnpack_mean``. "builtin": LiteRT's
    optimized integer Mean (the sum of the raw codes, zero point included, requantized by s_in / (n · s_out) in
    float32, plus z_out − round(z_in · s_in / s_out); 16 channels at a time with SIMD, whose rounding shift breaks ties
    upwards, the last C mod 16 channels in scalar code, which breaks them away from zero), where the mean keeps its
    dims; without them, and on TFLite Micro ("micro"), TFLite's reference ``QuantizedMeanOrSum`` (``_mean_or_sum``).
    Returns the value on the output grid."""
    axes = list(range(1, len(x.shape) - 1))
    acc = ops.sum(integers(x, in_scale), axis=axes, keepdims=bool(layer.keepdims))
    dims = [x.shape[a] for a in axes]
    if None in dims:  # spatial size known only at run time
        shape = ops.shape(x)
        n = ops.cast(ops.prod(ops.stack([shape[a] for a in axes])), "float32")
    else:
        n = float(math.prod(dims))
    s_in, s_out = ops.cast(in_scale, "float32"), ops.cast(out_scale, "float32")
    if kernels == "builtin" and layer.keepdims:  # the 4-D special case (axes 1 and 2 kept)
        z_in, z_out = ops.cast(in_zero_point, "float32"), ops.cast(out_zero_point, "float32")
        raw = _f64(acc) + _f64(n) * _f64(z_in)
        shift = z_in * s_in / s_out  # float32, rounded half away, as the kernel's bias
        bias = _f64(z_out) - _f64(ops.sign(shift) * ops.floor(ops.abs(shift) + 0.5))
        real = _f64(s_in / (ops.cast(n, "float32") * s_out))
        out = gemmlowp_requantize(raw, real, kernels)
        channels = x.shape[-1]
        simd = (channels // 16) * 16  # 16 channels at a time in SIMD (ties up), the rest scalar (ties away)
        if simd < channels:  # measured where the grids differ; on one shared grid every channel rounded ties up
            tail = gemmlowp_requantize(raw, real, "micro")
            same = ops.logical_and(ops.equal(s_in, s_out), ops.equal(z_in, z_out))
            out = ops.where(ops.logical_or(ops.arange(channels) < simd, same), out, tail)
        return ops.cast(out + bias - _f64(z_out), "float32") * s_out
    if kernels != "xnnpack":  # TFLite Micro, and LiteRT's general case (over a sequence: ties away, measured)
        return reference_mean(acc, n, s_in, s_out, "micro" if len(x.shape) == 3 else kernels)
    return xnnpack_mean(acc, n, in_scale, out_scale, out_zero_point, in_zero_point)


def reference_mean(acc, n, in_scale, out_scale, kernels):
    """TFLite's reference int8 MEAN (``_mean_or_sum``) from the zero-point-free sum ``acc`` of ``n`` input integers,
    with the rounding shift of ``kernels`` ("builtin": ties up; "micro": ties away). Returns the value on the output
    grid."""
    s_out = ops.cast(out_scale, "float32")
    return ops.cast(_mean_or_sum(acc, ops.cast(in_scale, "float32"), s_out, n, kernels), "float32") * s_out


def xnnpack_mean(acc, n, in_scale, out_scale, out_zero_point, in_zero_point):
    """XNNPACK's int8 MEAN (any axes) from the zero-point-free sum ``acc`` of ``n`` input integers, in float32 as its
    operator sets it up: the raw sum (zero point included) times s' = (s_in / s_out) · (1 / n), plus the output zero
    point less n · z_in · s', rounded half to even. Folding the input zero point into the output's moves near-ties:
    the zero-point-free form put up to 1.9 % of an EfficientNetV2B0 squeeze-excite MEAN one off. Returns the value on
    the output grid."""
    f32 = "float32"
    n = ops.cast(n, f32)
    z_in, z_out = ops.cast(in_zero_point, f32), ops.cast(out_zero_point, f32)
    scale = (ops.cast(in_scale, f32) / ops.cast(out_scale, f32)) * (1.0 / n)
    shifted_zero_point = z_out - (n * z_in) * scale
    raw = ops.cast(_f64(acc) + _f64(n) * _f64(z_in), f32)  # an int32 sum: exact in float32 below 2^24
    return (ops.round(raw * scale + shifted_zero_point) - z_out) * ops.cast(out_scale, f32)


# -- SOFTMAX: LiteRT's built-in int8 kernel (XNNPACK takes only float ones) -----------------------------------------


def softmax(x, in_scale, out_scale):
    """A softmax over the last axis as LiteRT's int8 SOFTMAX computes it on x86 (its optimized kernel without the
    uint16 tables, which only clang builds for aarch64 use): a float32 table of expf(−s_in · d) for each distance d
    from the row's largest input integer, the row's entries summed in float32 in order, multiplied by
    1 / (sum · s_out), rounded half away from zero (``std::round``) onto the output grid (zero point −128, scale
    1/256). Returns the value on the output grid."""
    codes = integers(x, in_scale)
    distance = ops.cast(ops.max(codes, axis=-1, keepdims=True) - codes, "float32")
    argument = -ops.cast(in_scale, "float32") * distance  # float32, as the table's build
    table = ops.cast(ops.exp(_f64(argument)), "float32")  # glibc's expf, correctly rounded here
    total = ops.cumsum(table, axis=-1)[..., -1:]  # one float32 sum in index order
    out_scale = ops.cast(out_scale, "float32")
    inverse = 1.0 / (total * out_scale)
    q = round_half_away(_f64(table * inverse))
    return ops.cast(ops.clip(q, 0.0, 255.0), "float32") * out_scale


# -- HARD_SWISH: LiteRT's built-in int8 kernel (XNNPACK does not take it), 16-bit fixed point ------------------------
# All integer steps below run in float64, where every intermediate (products of two int16 values) is exact.


class _Pool2D:
    """The pooling settings ``average_pool`` reads, for a 1-D pooling run as a 2-D one."""

    def __init__(self, pool_size, strides, padding):
        self.pool_size, self.strides, self.padding = pool_size, strides, padding


def average_pool(layer, x, scale, zero_point):
    """An AveragePooling2D on its input's grid as LiteRT's int8 AVERAGE_POOL_2D computes it (a built-in kernel on
    every runtime: XNNPACK does not take it): the sum of the raw codes (zero point included) over the window's valid
    positions, divided by their count in integers, rounding half away from zero, ``(acc ± n/2) / n``. ``x`` lies on
    the grid (scale, zero point), which the output shares."""
    if len(x.shape) == 3:  # AveragePooling1D: the converter runs it as a 2-D pooling over (1, width)
        pooled = average_pool(
            _Pool2D((1,) + tuple(layer.pool_size), (1,) + tuple(layer.strides), layer.padding),
            ops.expand_dims(x, 1),
            scale,
            zero_point,
        )
        return ops.squeeze(pooled, 1)
    z = ops.cast(zero_point, "float64")
    codes = integers(x, scale) + z
    pool = dict(pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding, data_format="channels_last")
    shape = ops.shape(x)
    ones = ops.ones((1, shape[1], shape[2], 1), "float32")
    window = ops.ones(tuple(layer.pool_size) + (1, 1), "float32")
    n = ops.cast(ops.conv(ones, window, strides=layer.strides, padding=layer.padding), "float64")
    acc = ops.round(ops.average_pool(codes, **pool) * n)
    q = ops.sign(acc) * ops.floor((ops.abs(acc) + ops.floor(n / 2)) / n)
    return ops.cast((q - z) * ops.cast(scale, "float64"), "float32")


def _q11_taps(n_in: int, n_out: int):
    """XNNPACK's resize-bilinear taps along one axis (half-pixel centres, TensorFlow's v2 resize), as its
    ``xnn_indirection_init_resize_bilinear2d_hwc_q11`` sets them up in float32: the lower and upper input index and
    the weight of the upper one in Q11 (``lrintf(alpha · 2^11)``)."""
    scale = np.float32(n_in) / np.float32(n_out)
    offset = np.float32(0.5) * scale - np.float32(0.5)
    pos = np.arange(n_out, dtype=np.float32) * scale + offset
    pos = np.minimum(np.maximum(pos, np.float32(0.0)), np.float32(n_in - 1))
    low = pos.astype(np.int32)
    high = np.minimum(low + 1, n_in - 1)
    alpha = np.rint((pos - low.astype(np.float32)) * np.float32(2048.0)).astype(np.int64)
    return low, high, alpha


def resize_bilinear(x, size, scale, zero_point):
    """A bilinear resize (half-pixel centres, no antialiasing) on its input's grid as XNNPACK's int8 kernel computes
    it: on the raw codes, Q11 weights, ``vt = tl·2^11 + (tr − tl)·α_x`` (and ``vb``), ``(vt·2^11 + (vb − vt)·α_y +
    2^21) >> 22``. ``x`` lies on the grid (scale, zero point), which the output shares; ``size`` is (height, width)."""
    h_in, w_in = int(x.shape[1]), int(x.shape[2])
    z = ops.cast(zero_point, "float64")
    codes = ops.cast(integers(x, scale) + z, "int64")
    top, bottom, alpha_y = _q11_taps(h_in, int(size[0]))
    left, right, alpha_x = _q11_taps(w_in, int(size[1]))
    a_x = ops.convert_to_tensor(alpha_x.reshape(1, 1, -1, 1))
    a_y = ops.convert_to_tensor(alpha_y.reshape(1, -1, 1, 1))

    def row(index):
        rows = ops.take(codes, index, axis=1)
        l, r = ops.take(rows, left, axis=2), ops.take(rows, right, axis=2)
        return l * 2048 + (r - l) * a_x

    vt, vb = row(top), row(bottom)
    out = ops.floor_divide(vt * 2048 + (vb - vt) * a_y + 2**21, 2**22)
    return ops.cast((ops.cast(out, "float64") - z) * ops.cast(scale, "float64"), "float32")


def _c_div(a, b: int):
    """C's integer division (rounds toward zero) of an int64 array by a positive int."""
    return np.sign(a) * (np.abs(a) // b)


def _q10_taps(n_in: int, n_out: int):
    """The taps of TFLite's reference integer resize (``ResizeBilinearInteger``, half-pixel centres) along one
    axis: the lower and upper input index and their weights in Q10 (the position ``v·s + s/2 − 2^9`` with
    ``s = round(2^10 · n_in / n_out)``, which may fall below 0 at the border)."""
    step = ((1 << 10) * n_in + n_out // 2) // n_out
    pos = np.arange(n_out, dtype=np.int64) * step + step // 2 - (1 << 9)
    low = np.maximum(_c_div(pos, 1 << 10), 0)
    high = np.minimum(_c_div(pos + (1 << 10) - 1, 1 << 10), n_in - 1)
    w_high = pos - (1 << 10) * low
    return low, high, (1 << 10) - w_high, w_high


def resize_bilinear_reference(x, size, scale, zero_point):
    """A bilinear resize (half-pixel centres) on its input's grid as TFLite's reference integer kernel computes it
    (``ResizeBilinearInteger``: LiteRT's built-in int8 kernel and TFLite Micro's): on the raw codes, Q10 weights along
    each axis, the Q20 sum rounded half away from zero. ``x`` lies on the grid (scale, zero point), which the output
    shares; ``size`` is (height, width)."""
    z = ops.cast(zero_point, "float64")
    codes = ops.cast(integers(x, scale) + z, "int64")
    top, bottom, w_top, w_bottom = _q10_taps(int(x.shape[1]), int(size[0]))
    left, right, w_left, w_right = _q10_taps(int(x.shape[2]), int(size[1]))
    wl, wr = (ops.convert_to_tensor(w.reshape(1, 1, -1, 1)) for w in (w_left, w_right))
    wt, wb = (ops.convert_to_tensor(w.reshape(1, -1, 1, 1)) for w in (w_top, w_bottom))

    def row(index):
        rows = ops.take(codes, index, axis=1)
        return ops.take(rows, left, axis=2) * wl + ops.take(rows, right, axis=2) * wr

    total = row(top) * wt + row(bottom) * wb
    rounded = total + ops.cast(ops.where(total > 0, 1 << 19, -(1 << 19)), "int64")
    out = ops.sign(rounded) * ops.floor_divide(ops.abs(rounded), 1 << 20)
    return ops.cast((ops.cast(out, "float64") - z) * ops.cast(scale, "float64"), "float32")


HARD_SWISH = ("hard_swish", "hard_silu")


def _f64(v):
    return ops.cast(v, "float64")


def _trunc_div_pot(v, d):
    """C's integer division by a power of two d (rounds toward zero)."""
    return ops.sign(v) * ops.floor(ops.abs(v) / d)


def _rounding_divide_by_pot(x, exponent):
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, rounded to nearest, ties away from zero."""
    d = ops.power(2.0, exponent)
    floor = ops.floor(x / d)
    remainder = x - floor * d
    threshold = ops.floor((d - 1) / 2) + ops.cast(x < 0, "float64")
    return floor + ops.cast(remainder > threshold, "float64")


def _srdhm16(a, b):
    """gemmlowp's SaturatingRoundingDoublingHighMul on int16 (no overflow case: b is a positive multiplier)."""
    ab = a * b
    nudge = ops.where(ab >= 0, _f64(2.0**14), _f64(1.0 - 2.0**14))
    return _trunc_div_pot(ab + nudge, 2.0**15)


def _saturate16(v):
    return ops.clip(v, -32768.0, 32767.0)


def quantize_multiplier(m):
    """TFLite's QuantizeMultiplier of a positive real multiplier (float64): m ≈ q31 · 2^(e − 31), q31 in
    [2^30, 2^31). Returns (q31, e) as float64."""
    m = ops.cast(m, "float64")
    e = ops.floor(ops.log2(m)) + 1.0
    mant = m / ops.power(2.0, e)  # [0.5, 1), corrected below where log2 was off by one at a power of two
    e = ops.where(mant >= 1.0, e + 1.0, ops.where(mant < 0.5, e - 1.0, e))
    mant = m / ops.power(2.0, e)
    q31 = ops.floor(mant * 2.0**31 + 0.5)
    e = ops.where(q31 >= 2.0**31, e + 1.0, e)
    q31 = ops.where(q31 >= 2.0**31, _f64(2.0**30), q31)
    return q31, e


def _int16_multiplier(m):
    """TFLite's QuantizeMultiplier then DownScaleInt32ToInt16Multiplier: m ≈ m16 · 2^(e − 15), m16 in [2^14, 2^15)."""
    q31, e = quantize_multiplier(m)
    m16 = ops.where(q31 >= 2.0**31 - 1 - 2.0**15, _f64(32767.0), ops.floor((q31 + 2.0**15) / 2.0**16))
    return m16, e


def requantize_linear(acc, s_in, s_w, s_out, kernels):
    """A conv's or dense's integer accumulator onto the output grid as integers (float32): XNNPACK's fp32
    multiplier s_in·s_w/s_out, or the built-in and Micro kernels' multiplier in double (their Prepare)."""
    if kernels != "xnnpack":
        real = _f64(s_in) * _f64(s_w) / _f64(s_out)
        return ops.cast(gemmlowp_requantize(acc, real, kernels), "float32")
    return requantize(acc, (s_in * s_w) / s_out)


def constant_scale(value: float) -> float:
    """The int8 grid step the converter gives a scalar constant: its range widened to hold 0, and, where that is not
    wider than 1e-6, to at least ±5e-7 (the MLIR quantizer's ExpandVerySmallRange). Measured: ε = 1e-3 gets
    [0, 1e-3], ε = 1e-6 gets [−5e-7, 1e-6]."""
    lo, hi = min(0.0, value), max(0.0, value)
    if hi - lo <= 1e-6:
        lo, hi = min(lo, -5e-7), max(hi, 5e-7)
    return (hi - lo) / 255.0


def constant_grid(value) -> tuple:
    """A constant tensor operand (of an ADD, SUB, MUL, MAXIMUM, MINIMUM) as the int8 file holds it, and its grid
    step: per tensor, its range widened to hold 0 (``constant_scale``), zero point rounded as the converter rounds
    it, values half away from zero. A scalar lands on its grid exactly. In float64 tensor ops, so that a trainable
    constant (a weight, in a traced graph) gets it too.

    Returns:
        ``(values on the grid as a float32 tensor, the grid step as a float64 scalar tensor)``.
    """
    c = ops.cast(value, "float64")
    lo, hi = ops.minimum(ops.min(c), 0.0), ops.maximum(ops.max(c), 0.0)
    narrow = hi - lo <= 1e-6
    lo, hi = ops.where(narrow, ops.minimum(lo, -5e-7), lo), ops.where(narrow, ops.maximum(hi, 5e-7), hi)
    scale = (hi - lo) / 255.0
    zero = ops.clip(ops.floor(-128.0 - lo / scale + 0.5), -128.0, 127.0)
    q = ops.clip(ops.sign(c) * ops.floor(ops.abs(c) / scale + 0.5) + zero, -128.0, 127.0)
    return ops.cast((q - zero) * scale, "float32"), scale


def on_constant_grid(value):
    """A constant operand on the grid the file holds it on (``constant_grid``), as a float32 array (call it eagerly,
    while a graph is built); a scalar is returned as it is (it lands on its grid exactly)."""
    if np.asarray(value).size <= 1:
        return value
    return np.asarray(constant_grid(value)[0])


def gemmlowp_requantize(x, real_multiplier, kernels):
    """``MultiplyByQuantizedMultiplier(x, quantize_multiplier(m))`` as the built-in kernels compute it: x shifted
    left by the positive exponent, a saturating rounding doubling high multiply by the 31-bit multiplier, then a
    rounding right shift, ties upwards ("builtin": LiteRT's optimized kernels) or away from zero ("micro": the
    reference kernels). ``x`` holds integers (|x| < 2^31); the products need int64. Returns float64 integers."""
    q31, e = quantize_multiplier(real_multiplier)
    return _multiply_by_quantized_multiplier(x, tf.cast(q31, tf.int64), e, kernels)


def _multiply_by_quantized_multiplier(x, q31, e, kernels):
    left = tf.cast(ops.maximum(e, 0.0), tf.int64)
    right = tf.cast(ops.maximum(-e, 0.0), tf.int64)
    x = tf.bitwise.left_shift(tf.cast(ops.round(_f64(x)), tf.int64), left)
    ab = x * q31
    nudge = tf.where(ab >= 0, tf.constant(2**30, tf.int64), tf.constant(1 - 2**30, tf.int64))
    high = tf.truncatediv(ab + nudge, tf.constant(2**31, tf.int64))  # C's division: toward zero
    one = tf.constant(1, tf.int64)
    if kernels == "builtin":  # (x + 2^(r−1)) >> r
        half = tf.where(right > 0, tf.bitwise.left_shift(one, tf.maximum(right - 1, 0)), tf.zeros_like(right))
        out = tf.bitwise.right_shift(high + half, right)
    else:  # gemmlowp's RoundingDivideByPOT
        mask = tf.bitwise.left_shift(one, right) - 1
        remainder = tf.bitwise.bitwise_and(high, mask)
        threshold = tf.bitwise.right_shift(mask, 1) + tf.cast(high < 0, tf.int64)
        out = tf.bitwise.right_shift(high, right) + tf.cast(remainder > threshold, tf.int64)
    return tf.cast(out, tf.float64)


def _mean_or_sum(acc, s_in, s_out, n, kernels):
    """TFLite's reference ``QuantizedMeanOrSum``: the multiplier of s_in / s_out, with 1/n folded into it by integer
    division (``(q31 << shift) / n``, truncated: the mean's rounding threshold then sits a little below half an LSB)
    and the exponent lowered by ``shift = floor(log2 n)``, applied to the zero-point-free sum."""
    q31, e = quantize_multiplier(_f64(s_in) / _f64(s_out))
    n64 = tf.cast(ops.round(_f64(n)), tf.int64)
    shift = ops.minimum(ops.minimum(ops.floor(ops.log2(_f64(n))), 32.0), 31.0 + e)
    folded = tf.math.floordiv(tf.bitwise.left_shift(tf.cast(q31, tf.int64), tf.cast(shift, tf.int64)), n64)
    return _multiply_by_quantized_multiplier(acc, folded, e - shift, kernels)


def hard_swish(x, in_scale, out_scale):
    """x·relu6(x + 3)/6 as LiteRT's int8 HARD_SWISH computes it (TFLite's reference HardSwish: a 16-bit "hires"
    input, a saturating "relu-ish" factor on the 3/32768 scale, a truncating doubling high multiply). Returns the value
    on the output grid."""
    hires = ops.cast(in_scale, "float32") / 128.0  # the multipliers as TFLite computes them: float32, then double
    out_m, out_e = _int16_multiplier(hires / ops.cast(out_scale, "float32"))
    relu_m, relu_e = _int16_multiplier(hires / (3.0 / 32768.0))
    hi = _saturate16(integers(x, in_scale) * 128.0)
    pre = _srdhm16(hi, out_m)
    left = _saturate16(hi * ops.power(2.0, ops.maximum(relu_e - 1.0, 0.0)))
    left = _saturate16(_srdhm16(left, relu_m) * 2.0)
    right = _rounding_divide_by_pot(_srdhm16(hi, relu_m), ops.maximum(-relu_e, 0.0))
    reluish = ops.where(relu_e > 0, left, right)
    reluish = ops.floor((reluish + 2.0**15) / 2.0)
    out = _rounding_divide_by_pot(_trunc_div_pot(reluish * pre, 2.0**15), -out_e)
    return ops.cast(out, "float32") * ops.cast(out_scale, "float32")


def leaky_relu(x, slope, in_scale, in_zero_point, out_scale, out_zero_point, kernels="xnnpack"):
    """A leaky ReLU from one grid onto another as LiteRT's int8 LEAKY_RELU computes it. XNNPACK: Q8 multipliers,
    ``lrintf(256 · s_in/s_out)`` and ``lrintf(256 · s_in/s_out · slope)`` in float32, the output
    ``(z_out·256 + 128 + (q − z_in)·m) >> 8`` (read in XNNPACK's ``qs8-vlrelu`` and ``microparams-init.c``: one or two
    steps off a float requantization). The built-in kernels and TFLite Micro: TFLite's reference
    ``QuantizeLeakyRelu``, gemmlowp multipliers of s_in/s_out and s_in·slope/s_out (computed in float32). ``x`` lies
    on the input grid; returns the value on the output grid."""
    v = integers(x, in_scale)
    s_in, s_out = ops.cast(in_scale, "float32"), ops.cast(out_scale, "float32")
    positive = s_in / s_out
    if kernels == "xnnpack":
        m_pos = ops.round(256.0 * positive)  # lrintf: half to even, as ops.round
        m_neg = ops.round(256.0 * (positive * np.float32(slope)))
        acc = _f64(out_zero_point) * 256.0 + 128.0 + v * ops.where(v >= 0, _f64(m_pos), _f64(m_neg))
        out = ops.floor(acc / 256.0)
    else:
        negative = (s_in * np.float32(slope)) / s_out
        above = gemmlowp_requantize(ops.maximum(v, 0.0), _f64(positive), "micro")
        below = gemmlowp_requantize(ops.minimum(v, 0.0), _f64(negative), "micro")
        out = _f64(out_zero_point) + ops.where(v >= 0, above, below)
    out = ops.clip(out, -128.0, 127.0)
    return ops.cast((out - _f64(out_zero_point)) * _f64(s_out), "float32")


# -- ADD: XNNPACK's int8 addition -------------------------------------------------------------------------------------


def _float32_exponent(v):
    """floor(log2(v)) of positive float32 values, exact (the exponent field of the float)."""
    v = ops.cast(v, "float64")
    e = ops.floor(ops.log2(v))
    e = ops.where(ops.power(2.0, e) > v, e - 1.0, e)
    return ops.where(ops.power(2.0, e + 1.0) <= v, e + 1.0, e)


def add(xs, in_scales, out_scale, kernels="xnnpack"):
    """The sum of tensors on their own grids as XNNPACK's int8 ADD computes it: each input's integers times a
    21-bit multiplier round(s_i/s_out · 2^shift) (the largest in [2^20, 2^21)), summed exactly, then shifted right
    with rounding half up. Returns the value on the output grid. The built-in kernels instead shift each input's
    integers left by 20, requantize them by s_i / (2·max s), sum, and requantize by 2·max s / (2^20 · s_out)."""
    if kernels != "xnnpack":
        scales = [_f64(ops.cast(s, "float32")) for s in in_scales]
        twice_max = scales[0]
        for s in scales[1:]:
            twice_max = ops.maximum(twice_max, s)
        twice_max = 2.0 * twice_max
        raw = 0.0
        for x, s, s64 in zip(xs, in_scales, scales):
            raw = raw + gemmlowp_requantize(integers(x, s) * 2.0**20, s64 / twice_max, kernels)
        real_out = twice_max / (2.0**20 * _f64(ops.cast(out_scale, "float32")))
        return ops.cast(gemmlowp_requantize(raw, real_out, "micro"), "float32") * ops.cast(out_scale, "float32")
    out_scale = ops.cast(out_scale, "float32")
    ratios = [ops.cast(s, "float32") / out_scale for s in in_scales]  # float32 divisions, as XNNPACK's init
    largest = ratios[0]
    for r in ratios[1:]:
        largest = ops.maximum(largest, r)
    shift = 20.0 - _float32_exponent(largest)
    scale = ops.power(2.0, shift)
    acc = 0.0
    for x, s, r in zip(xs, in_scales, ratios):
        acc = acc + integers(x, s) * ops.round(ops.cast(r, "float64") * scale)
    return ops.cast(ops.floor(acc / scale + 0.5), "float32") * out_scale


def multiply(xs, in_scales, out_scale, kernels="xnnpack"):
    """The product of two tensors on their own grids as XNNPACK's int8 MUL computes it: the exact product of the
    integers times s_a·s_b/s_out in float32, rounded half to even (built-in kernels: gemmlowp's requantization by
    s_a·s_b/s_out in double). Returns the value on the output grid."""
    s_a, s_b = (ops.cast(s, "float32") for s in in_scales)
    out_scale = ops.cast(out_scale, "float32")
    product = integers(xs[0], in_scales[0]) * integers(xs[1], in_scales[1])
    if kernels != "xnnpack":
        return (
            ops.cast(gemmlowp_requantize(product, _f64(s_a) * _f64(s_b) / _f64(out_scale), "micro"), "float32")
            * out_scale
        )
    return requantize(product, s_a * s_b / out_scale) * out_scale


# -- RSQRT: LiteRT's built-in int8 kernel (XNNPACK does not take it), gemmlowp fixed point --------------------------
# For each input integer v = q − z > 0 the kernel takes 1/√v from GetInvSqrtQuantizedMultiplierExp (five
# Newton-Raphson steps in Q3 fixed point), turns it into data = MultiplyByQuantizedMultiplier(1, m_v, shift_v + 20),
# then requantizes data by 1 / (√s_in · s_out) (the square root and product in float32, the reciprocal in double) with
# the exponent lowered by 20, and adds the output zero point; v = 0 gives 127. data depends on v alone: a table.

_I32_MAX = 2**31 - 1


def _srdhm_int(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul on Python ints."""
    if a == b == -(2**31):
        return _I32_MAX
    ab = a * b
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return (abs(t) >> 31) * (1 if t >= 0 else -1)


def _rounding_shift_int(x: int, exponent: int) -> int:
    """gemmlowp's RoundingDivideByPOT on Python ints (ties away from zero)."""
    if exponent <= 0:
        return x
    mask = (1 << exponent) - 1
    return (x >> exponent) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


def _times_pot_int(raw: int, exponent: int) -> int:
    """gemmlowp's SaturatingRoundingMultiplyByPOT: a saturating left shift, or a rounding right shift."""
    if exponent < 0:
        return _rounding_shift_int(raw, -exponent)
    return max(-(2**31), min(_I32_MAX, raw << exponent))


def _inv_sqrt_multiplier(v: int) -> tuple:
    """TFLite's GetInvSqrtQuantizedMultiplierExp(v, kReverseShift): (multiplier, shift) with 1/√v ≈ multiplier ·
    2^(shift − 31)."""
    if v <= 1:
        return _I32_MAX, 0
    shift = 11
    while v >= 1 << 29:
        v //= 4
        shift += 1
    pairs = (32 - v.bit_length() - 1) // 2 - 1
    shift -= pairs
    v <<= 2 * pairs
    half_input = _times_pot_int(v >> 1, -1)  # Q3
    x = 1 << 28  # Q3 one
    for _ in range(5):
        cube = _times_pot_int(_srdhm_int(_srdhm_int(x, x), x), 6)  # Q9 → Q3
        x = _times_pot_int(_srdhm_int((1 << 28) + (1 << 27), x) - _srdhm_int(half_input, cube), 3)  # Q6 → Q3
    x = _srdhm_int(x, 1518500250)  # times √2 / 2
    if shift < 0:
        x, shift = x << -shift, 0
    return x, -shift


def _rsqrt_data(v: int) -> int:
    multiplier, shift = _inv_sqrt_multiplier(v)
    shift += 20
    return _rounding_shift_int(_srdhm_int(1 << max(shift, 0), multiplier), max(-shift, 0))


_RSQRT_DATA = [0] + [_rsqrt_data(v) for v in range(1, 256)]


def rsqrt(x, in_scale, out_scale, out_zero_point):
    """1/√x as LiteRT's int8 RSQRT computes it (see above), for ``x`` on the input grid. Returns the value on the
    output grid, clamped to int8."""
    v = ops.clip(integers(x, in_scale), 0.0, 255.0)
    data = tf.gather(tf.constant(_RSQRT_DATA, tf.int64), tf.cast(v, tf.int64))
    root = ops.cast(ops.sqrt(ops.cast(in_scale, "float32")), "float32") * ops.cast(out_scale, "float32")
    q31, e = quantize_multiplier(1.0 / _f64(root))
    z = _f64(ops.cast(out_zero_point, "float32"))
    codes = _multiply_by_quantized_multiplier(data, tf.cast(q31, tf.int64), e - 20.0, "micro") + z
    codes = ops.where(v > 0, codes, _f64(127.0))
    return ops.cast(ops.clip(codes, -128.0, 127.0) - z, "float32") * ops.cast(out_scale, "float32")
