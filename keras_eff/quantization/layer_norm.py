"""LayerNormalization as int8 TFLite runs it: the normalization over the last axis as MEAN, SUB, MUL, MEAN, ADD,
RSQRT, MUL, each on a range of its own (what the converter's own post-training quantization calibrates), then γ and β
as a 1×1 depthwise convolution that ``quantize_model`` adds after it (per-channel int8, trainable).

Where the variance rounds to 0 on its grid (every channel of a position nearly equal), int8 RSQRT saturates at its
output range; the simulation does the same, so that the range never learns the infinity a float rsqrt(0) would give.
The intermediate ops run the float simulation on their grids (no integer emulation of LiteRT's kernels): on the
harness's tiny models (tests/test_registry_harness.py) every output is within 1 LSB of LiteRT after a training step,
which is measured there, not guaranteed for every model.
"""

from __future__ import annotations

import keras
from keras import ops

from .composite import CompositeQuantized
from .quantizers import ActivationQuantizer

STEPS = ("mean", "centered", "squared", "variance", "variance_eps", "rsqrt", "normalized")


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedNormalization(CompositeQuantized):
    """(x − mean) · rsqrt(var + ε) over the last axis, every intermediate fake-quantized (γ, β come after it)."""

    def __init__(self, epsilon=1e-3, bits=8, symmetric=False, ema_decay=0.99, quantizers=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.bits, self.symmetric, self.ema_decay = int(bits), bool(symmetric), float(ema_decay)
        act = dict(bits=bits, symmetric=symmetric, ema_decay=ema_decay)
        self._init_steps(STEPS, quantizers, lambda step: ActivationQuantizer(**act, name=f"{self.name}_{step}_range"))

    def build(self, input_shape):
        self._build_steps()
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
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
            "bits": self.bits,
            "symmetric": self.symmetric,
            "ema_decay": self.ema_decay,
        }
