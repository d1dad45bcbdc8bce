"""LayerNormalization as int8 TFLite runs it: the normalization over the last axis as MEAN, SUB, MUL, MEAN, ADD,
RSQRT, MUL, each on a range of its own (what the converter's own post-training quantization calibrates), then γ and β
as a 1×1 depthwise convolution that ``quantize_model`` adds after it (per-channel int8, trainable).

Where the variance rounds to 0 on its grid (every channel of a position nearly equal), int8 RSQRT saturates at its
output range; the simulation does the same, so that the range never learns the infinity a float rsqrt(0) would give.

At inference with XNNPACK's arithmetic (``integer_kernels="xnnpack"``, the default) and every grid known, each op
computes as LiteRT does (docs/parity.md): MEAN over the channels as XNNPACK's mean (the exact sum times
s_in / (n · s_out) in float32, the zero point added, half to even), SUB and ADD as its 21-bit fixed-point ADD (ε a
constant on the grid the converter gives it: ``integer_inference.constant_scale``), MUL as its exact product
requantized in float32, RSQRT as LiteRT's built-in kernel (gemmlowp fixed point: ``integer_inference.rsqrt``). The
input's grid is placed by ``placement.place_ranges``, as a wrapper's. With LiteRT's built-in kernels
(``"builtin"``) the same ops use their arithmetic: MEAN as TFLite's reference kernel (ties away from zero), ADD and MUL
in gemmlowp fixed point; TFLite Micro's (``"micro"``) are the same formulas with its ADD (measured bit-exact against
TFLite Micro in a transformer: tests/test_transformer_int8.py).
"""

from __future__ import annotations

import keras
from keras import ops

from . import integer_inference as integer
from .composite import CompositeQuantized, PlacedInput

STEPS = ("mean", "centered", "squared", "variance", "variance_eps", "rsqrt", "normalized")


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedNormalization(PlacedInput, CompositeQuantized):
    """(x − mean) · rsqrt(var + ε) over the last axis, every intermediate fake-quantized (γ, β come after it)."""

    def __init__(
        self,
        epsilon=1e-3,
        bits=8,
        symmetric=False,
        ema_decay=0.99,
        quantizers=None,
        integer_kernels="xnnpack",
        input_range=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self._init_activation_steps(STEPS, bits, symmetric, ema_decay, quantizers, integer_kernels)
        self._place_saved(input_range)  # the input's grid (placement.place_ranges)

    def compute_output_shape(self, input_shape):
        return input_shape

    def _integer_path(self, training) -> bool:
        return self._emulates(training, self._input_range, *self.step_quantizers)

    def _call_integer(self, x):
        """The seven ops as LiteRT computes them (module docstring); each result clamped onto its grid."""
        q = dict(zip(STEPS, self.step_quantizers))
        scale = {step: q[step].tflite_scale() for step in STEPS}
        s_in = self._input_range.tflite_scale()

        def onto(step, v):
            return q[step].fake_quantize(v)

        kernels = self.integer_kernels

        def channel_mean(v, s_v, z_v, step):
            acc = ops.sum(integer.integers(v, s_v), axis=-1, keepdims=True)
            n = float(v.shape[-1])
            if kernels == "xnnpack":
                return onto(step, integer.xnnpack_mean(acc, n, s_v, scale[step], q[step].tflite_zero_point(), z_v))
            # LiteRT's built-in MEAN over the last axis is the reference kernel, ties away from zero (measured: 0 of
            # 512 outputs off; ties up put 30 off)
            return onto(step, integer.reference_mean(acc, n, s_v, scale[step], "micro"))

        mean = channel_mean(x, s_in, self._input_range.tflite_zero_point(), "mean")
        centered = onto("centered", integer.add([x, -mean], [s_in, scale["mean"]], scale["centered"], kernels))
        squared = onto(
            "squared", integer.multiply([centered, centered], [scale["centered"]] * 2, scale["squared"], kernels)
        )
        variance = channel_mean(squared, scale["squared"], q["squared"].tflite_zero_point(), "variance")
        s_eps = ops.cast(integer.constant_scale(self.epsilon), "float32")
        eps = ops.cast(ops.round(self.epsilon / s_eps), "float32") * s_eps
        eps_scales = [scale["variance"], s_eps]
        shifted = onto(
            "variance_eps",
            integer.add([variance, eps * ops.ones_like(variance)], eps_scales, scale["variance_eps"], kernels),
        )
        inverse = onto(
            "rsqrt", integer.rsqrt(shifted, scale["variance_eps"], scale["rsqrt"], q["rsqrt"].tflite_zero_point())
        )
        scales = [scale["centered"], scale["rsqrt"]]
        product = integer.multiply([centered, inverse], scales, scale["normalized"], kernels)
        return onto("normalized", product)

    def call(self, x, training=None):
        if self._integer_path(training):
            return self._call_integer(x)
        q = dict(zip(STEPS, self.step_quantizers))
        mean = q["mean"](ops.mean(x, axis=-1, keepdims=True), training=training)
        centered = q["centered"](ops.subtract(x, mean), training=training)
        squared = q["squared"](ops.multiply(centered, centered), training=training)
        variance = q["variance"](ops.mean(squared, axis=-1, keepdims=True), training=training)
        shifted = q["variance_eps"](ops.add(variance, self.epsilon), training=training)
        if self._export_view or q["variance_eps"].calibrating:
            raw = ops.rsqrt(shifted)
        else:  # int8 RSQRT of a zero code saturates at its output range: so does the simulation (no infinity)
            raw = ops.where(
                shifted > 0,
                ops.rsqrt(ops.maximum(shifted, 1e-12)),
                ops.stop_gradient(ops.maximum(q["rsqrt"].range_max, 0.0)),
            )
        inverse = q["rsqrt"](raw, training=training)
        return q["normalized"](ops.multiply(centered, inverse), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
        }
