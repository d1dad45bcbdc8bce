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

import contextlib

import keras
from keras import ops

from .quantizers import ActivationQuantizer

STEPS = ("mean", "centered", "squared", "variance", "variance_eps", "rsqrt", "normalized")


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedNormalization(keras.layers.Layer):
    """(x − mean) · rsqrt(var + ε) over the last axis, every intermediate fake-quantized (γ, β come after it)."""

    def __init__(self, epsilon=1e-3, bits=8, symmetric=False, ema_decay=0.99, quantizers=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.bits, self.symmetric, self.ema_decay = int(bits), bool(symmetric), float(ema_decay)
        act = dict(bits=bits, symmetric=symmetric, ema_decay=ema_decay)
        if quantizers is None:
            self.step_quantizers = [ActivationQuantizer(**act, name=f"{self.name}_{step}_range") for step in STEPS]
        else:  # from a config: the same objects the layers reading them hold (see wrapper._shared_config)
            self.step_quantizers = [q if isinstance(q, ActivationQuantizer) else
                                    keras.saving.deserialize_keras_object(q) for q in quantizers]
        self._export_view = False

    @property
    def final_quantizer(self):
        """The range of this layer's output (``placement`` reads it)."""
        return self.step_quantizers[-1]

    def build(self, input_shape):
        for q in self.step_quantizers:
            if not q.built:
                q.build()
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
            raw = ops.where(shifted > 0, ops.rsqrt(ops.maximum(shifted, 1e-12)),
                            ops.stop_gradient(ops.maximum(q["rsqrt"].range_max, 0.0)))
        inverse = q["rsqrt"](raw, training=training)
        return q["normalized"](ops.multiply(centered, inverse), training=training)

    @contextlib.contextmanager
    def export_view(self):
        """``tflite_export``'s export protocol: the plain op graph (no saturation guard) while traced for export."""
        previous, self._export_view = self._export_view, True
        try:
            yield
        finally:
            self._export_view = previous

    def unset_ranges(self) -> list:
        return [name for q in self.step_quantizers for name in q.unset_ranges()]

    def get_config(self):
        from .wrapper import _shared_config

        return {**super().get_config(), "epsilon": self.epsilon, "bits": self.bits, "symmetric": self.symmetric,
                "ema_decay": self.ema_decay, "quantizers": [_shared_config(q) for q in self.step_quantizers]}
