"""Fake-quant quantizers: straight-through-estimator gradients, lowered to TensorFlow's FakeQuant ops.

The TFLite converter reads the ranges of TensorFlow's FakeQuant ops, so the simulation and the int8 file share one
definition of every grid. Weights are quantized from their current values at each call (no state); activations keep a
range (min, max) learned by an exponential moving average of batch ranges during training, or set by calibration.

Symmetric weights with b ≤ 8 bits run on the 8-bit narrow-range op with the range ±127·s, where s = max|w|/(2^(b−1)−1):
every value lands on the b-bit grid, and the int8 file stores exactly those integers with scale s.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from ..distribute import replicas_in_sync  # noqa: F401  (re-exported for the wrappers)
from ..layers import FIXED_RANGES as _REGISTRY_FIXED_RANGES

MIN_BITS, MAX_BITS = 2, 16
_EPS = 1e-8


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what}={bits!r} is out of range: quantization needs an integer from {MIN_BITS} to "
                         f"{MAX_BITS} (8 for int8 TFLite)")
    return bits


def fake_quant(x, min_value, max_value, bits: int = 8, narrow_range: bool = False):
    """Per-tensor fake quantization with TensorFlow's op (zero is nudged onto the grid, as TFLite does)."""
    return tf.quantization.fake_quant_with_min_max_vars(x, min_value, max_value, num_bits=bits,
                                                        narrow_range=narrow_range)


def fake_quant_per_channel(x, min_values, max_values, bits: int = 8, narrow_range: bool = False):
    """Per-channel fake quantization along the last axis."""
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(x, min_values, max_values, num_bits=bits,
                                                                    narrow_range=narrow_range)


def global_min_max(lo, hi):
    """(min, max) over the whole global batch: every replica's (lo, hi) gathered (``ReplicaContext.all_gather``), so
    each replica computes the same value a single device computes on the global batch. Identity without a strategy.
    A synchronization point: it must not sit inside a ``tf.cond`` / ``tf.while_loop`` branch (TensorFlow's
    ``merge_call`` limit on CPUs and GPUs without XLA)."""
    if replicas_in_sync() == 1:
        return lo, hi
    ctx = tf.distribute.get_replica_context()
    both = ctx.all_gather(ops.reshape(ops.stack([lo, hi]), (1, 2)), axis=0)
    return ops.min(both[:, 0]), ops.max(both[:, 1])


def grid_scale(min_value, max_value, bits: int = 8, narrow_range: bool = False):
    """The step of the (nudged) grid the FakeQuant op uses for a range."""
    levels = 2 ** bits - (2 if narrow_range else 1)
    return (max_value - min_value) / levels


@keras.saving.register_keras_serializable(package="keras_eff")
class WeightQuantizer:
    """Quantizes a weight tensor from its own range at each call.

    bits: 2–16. symmetric: range ±max|w| (int8 TFLite needs it) or [min(w), max(w)]. per_channel: one range per
    output channel, the last axis of the tensor handed in (callers move the channel axis last).
    """

    def __init__(self, bits: int = 8, symmetric: bool = True, per_channel: bool = True):
        self.bits = check_bits(bits, "weight_bits")
        self.symmetric = bool(symmetric)
        self.per_channel = bool(per_channel)

    def _ranges(self, w):
        axes = list(range(len(w.shape) - 1)) if self.per_channel else None
        if self.symmetric:
            m = ops.maximum(ops.max(ops.abs(w), axis=axes), _EPS)
            return -m, m
        lo = ops.minimum(ops.min(w, axis=axes), 0.0)
        hi = ops.maximum(ops.max(w, axis=axes), lo + _EPS)
        return lo, hi

    def scale(self, w):
        """The grid step of ``w``'s quantization: per channel (a vector) or per tensor (a scalar)."""
        lo, hi = self._ranges(ops.stop_gradient(w))
        if self.symmetric:
            return hi / (2 ** (self.bits - 1) - 1)
        return grid_scale(lo, hi, self.bits)

    def tflite_scale(self, w):
        """The symmetric scale the int8 file stores, max|w| / (2^(b−1) − 1) correctly rounded to float32. Divided in
        float64: in a traced graph TensorFlow turns a float32 division by a constant into a multiplication by its
        reciprocal, one ulp off at times."""
        _, hi = self._ranges(ops.stop_gradient(w))
        return ops.cast(ops.cast(hi, "float64") / (2 ** (self.bits - 1) - 1), "float32")

    def __call__(self, w):
        dtype = w.dtype
        w = ops.cast(w, "float32")  # TensorFlow's FakeQuant ops are float32 only (a mixed-precision policy)
        lo, hi = self._ranges(ops.stop_gradient(w))
        if self.symmetric and self.bits <= 8:
            # the b-bit symmetric grid, held by the 8-bit narrow-range op: scale s, integers in ±(2^(b-1) - 1)
            hi = hi * (127.0 / (2 ** (self.bits - 1) - 1))
            lo = -hi
            bits, narrow = 8, True
        else:
            bits, narrow = self.bits, self.symmetric
        if self.per_channel:
            q = fake_quant_per_channel(w, lo, hi, bits, narrow)
        else:
            q = fake_quant(w, lo, hi, bits, narrow)
        return q if dtype == q.dtype else ops.cast(q, dtype)

    @property
    def exportable(self) -> bool:
        return self.symmetric and self.bits <= 8

    def get_config(self):
        return {"bits": self.bits, "symmetric": self.symmetric, "per_channel": self.per_channel}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"WeightQuantizer({self.bits}-bit {kind}, {'per-channel' if self.per_channel else 'per-tensor'})"


FIXED_RANGES = _REGISTRY_FIXED_RANGES  # TFLite's fixed output grids (sigmoid, softmax, tanh): see keras_eff.layers


@keras.saving.register_keras_serializable(package="keras_eff")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor with a learned range (asymmetric 8-bit by default).

    In training the range follows an exponential moving average of batch ranges (``ema_decay``) until
    ``ranges_frozen`` is set (``keras_eff.callbacks.FreezeRanges``); with ``trainable_range`` the range is instead a
    pair of trainable variables learned by gradient. ``fixed_range`` pins the range (TFLite's fixed output ranges).
    ``calibrate`` collects ranges from data with quantization switched off.

    Always computes in float32 (its dtype policy is "float32" whatever the global policy: TensorFlow's FakeQuant ops
    take float32 only, and a range must not be rounded to float16). Under ``tf.distribute`` the EMA step uses the
    global batch's min/max (gathered from every replica), and the range variables are ``ONLY_FIRST_REPLICA``: every
    replica holds the value single-device training on the global batch would (docs/distributed.md).
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, ema_decay: float = 0.99, fixed_range=None,
                 trainable_range: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.bits = check_bits(bits, "activation_bits")
        self.symmetric = bool(symmetric)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must lie in [0, 1)")
        self.ema_decay = float(ema_decay)
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)
        self.trainable_range = bool(trainable_range)
        self.calibrating = False  # set by keras_eff.calibrate
        self._calibration = None

    def build(self, input_shape=None):
        lo, hi = self.fixed_range or (-1.0, 1.0)
        trainable = self.trainable_range and self.fixed_range is None
        # ONLY_FIRST_REPLICA: an update in a replica function keeps replica 0's value on every replica (all compute the
        # same one from the gathered global min/max); a trainable range is updated by the optimizer as any weight
        first = "only_first_replica"
        self.range_min = self.add_weight(name="range_min", shape=(), initializer=keras.initializers.Constant(lo),
                                         trainable=trainable, dtype="float32", aggregation=first)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer=keras.initializers.Constant(hi),
                                         trainable=trainable, dtype="float32", aggregation=first)
        self.initialized = self.add_weight(name="initialized", shape=(), trainable=False, dtype="float32",
                                           initializer=keras.initializers.Constant(1.0 if self.fixed_range else 0.0),
                                           aggregation=first)
        self.ranges_frozen = self.add_weight(name="ranges_frozen", shape=(), initializer="zeros", trainable=False,
                                             dtype="float32", aggregation=first)

    @property
    def learns_by_ema(self) -> bool:
        return self.fixed_range is None and not self.trainable_range

    def _batch_range(self, x):
        x = ops.cast(x, "float32")
        lo, hi = global_min_max(ops.min(x), ops.max(x))  # the global batch's, under tf.distribute
        lo = ops.minimum(lo, 0.0)
        hi = ops.maximum(hi, 0.0)
        if self.symmetric:
            m = ops.maximum(-lo, hi)
            return -m, m
        return lo, hi

    def update_range(self, x):
        """One EMA step towards the batch's range (the first batch sets it), unless ranges are frozen."""
        lo, hi = self._batch_range(ops.stop_gradient(x))
        first = ops.equal(self.initialized, 0.0)
        frozen = ops.greater(self.ranges_frozen, 0.0)
        d = self.ema_decay
        new_lo = ops.where(first, lo, d * self.range_min + (1 - d) * lo)
        new_hi = ops.where(first, hi, d * self.range_max + (1 - d) * hi)
        self.range_min.assign(ops.where(frozen, self.range_min, new_lo))
        self.range_max.assign(ops.where(frozen, self.range_max, new_hi))
        self.initialized.assign(ops.where(frozen, self.initialized, 1.0))

    def fake_quantize(self, x):
        x = ops.cast(x, "float32")  # called directly by wrappers too, on a tensor of any float dtype
        lo = ops.minimum(self.range_min, 0.0)
        hi = ops.maximum(self.range_max, lo + _EPS)
        return fake_quant(x, lo, hi, self.bits, narrow_range=False)

    def grid_step(self):
        """The scale of this range's grid, as a tensor (the nudge moves the range but keeps its width)."""
        lo = ops.minimum(self.range_min, 0.0)
        hi = ops.maximum(self.range_max, lo + _EPS)
        return grid_scale(lo, hi, self.bits)

    def call(self, x, training=None):
        if self.calibrating:
            self._record(x)
            return x
        if training and self.learns_by_ema:
            self.update_range(x)
        elif training and self.trainable_range and self.fixed_range is None:
            self.initialized.assign(1.0)  # the range is learned by gradient from this step on
        return self.fake_quantize(x)

    def _record(self, x):
        lo, hi = (float(v) for v in self._batch_range(x))
        if self._calibration is None:
            self._calibration = [lo, hi]
        else:
            self._calibration = [min(self._calibration[0], lo), max(self._calibration[1], hi)]

    def finish_calibration(self):
        """Sets the range to what calibration saw (fixed ranges stay)."""
        if self._calibration is not None and self.fixed_range is None:
            self.range_min.assign(self._calibration[0])
            self.range_max.assign(self._calibration[1])
            self.initialized.assign(1.0)
        self._calibration = None
        self.calibrating = False

    def _range64(self):
        """(min, max) in float64, widened to hold zero, as the converter reads them."""
        lo = ops.minimum(ops.cast(self.range_min, "float64"), 0.0)
        return lo, ops.maximum(ops.cast(self.range_max, "float64"), lo + _EPS)

    def tflite_scale(self):
        """The scale the int8 file stores for this range, as a float32 tensor: the converter takes the width in double
        (``grid_step`` subtracts in float32 and can be one ulp off)."""
        lo, hi = self._range64()
        return ops.cast((hi - lo) / (2 ** self.bits - 1), "float32")

    def tflite_zero_point(self):
        """The zero point the int8 file stores for this range (TFLite's nudge: qmin − min/scale, rounded half away
        from zero, clamped to the integer range), as a float32 tensor."""
        lo, hi = self._range64()
        qmin = -(2.0 ** (self.bits - 1))
        z = qmin - lo / ((hi - lo) / (2 ** self.bits - 1))
        z = ops.sign(z) * ops.floor(ops.abs(z) + 0.5)
        return ops.cast(ops.clip(z, qmin, -qmin - 1.0), "float32")

    @property
    def scale(self) -> float:
        lo = min(float(self.range_min.numpy()), 0.0)
        hi = max(float(self.range_max.numpy()), lo + _EPS)
        return float(grid_scale(lo, hi, self.bits))

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def range_set(self) -> bool:
        """Whether the range holds data's values: fixed, calibrated (``keras_eff.calibrate``) or trained. Saved with
        the model (the ``initialized`` variable)."""
        if self.fixed_range is not None:
            return True
        return self.built and float(keras.ops.convert_to_numpy(self.initialized)) > 0.0

    def unset_ranges(self) -> list:
        """[this range's name] while it was never set, else []: the ``tflite_export.ranges`` protocol that makes
        ``to_tflite`` refuse a model never calibrated nor trained."""
        return [] if self.range_set else [self.name]

    def export_problems(self) -> list:
        if self.bits != 8:
            return [f"activation range {self.name!r}: activation_bits={self.bits} (int8 TFLite activations are 8-bit)"]
        return []

    def get_config(self):
        config = super().get_config()
        config.update(bits=self.bits, symmetric=self.symmetric, ema_decay=self.ema_decay,
                      fixed_range=self.fixed_range, trainable_range=self.trainable_range)
        return config
