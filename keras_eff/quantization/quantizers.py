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

from ..distribute import replicas_in_sync
from ..layers import FIXED_RANGES as _REGISTRY_FIXED_RANGES
from . import integer_inference as integer
from .export_view import ExportView

MIN_BITS, MAX_BITS = 2, 16
_EPS = 1e-8
MIN_WIDTH = 1e-3
"""The narrowest an activation range's grid spans. A range that saw nothing but zeros (a ReLU dead on the calibration
data: [0, 0]) had a scale near 4e-11, and the layers around it requantized by ratios XNNPACK refuses (the file did
not load) or the file's zero point came out otherwise than the simulation's (138 LSB). Zero stays exact."""


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"{what}={bits!r} is out of range: quantization needs an integer from {MIN_BITS} to "
            f"{MAX_BITS} (8 for int8 TFLite)"
        )
    return bits


def fake_quant(x, min_value, max_value, bits: int = 8, narrow_range: bool = False):
    """Fake-quantizes a tensor with one range, with TensorFlow's ``fake_quant_with_min_max_vars``.

    The range is nudged so that zero lies on the grid, as TFLite does; the gradient is straight-through inside the
    range and zero outside it.

    Args:
        x: A float32 tensor.
        min_value: The range's lower end (a scalar, a tensor or a variable).
        max_value: The range's upper end.
        bits: Bits of the grid, 2 to 16.
        narrow_range: Leave out the lowest integer (the symmetric ±(2^(b−1) − 1) grid of int8 TFLite weights).

    Returns:
        ``x`` rounded to the grid and clipped to the range, as a float32 tensor.

    Example:
        ```python
        y = keras_eff.quantization.fake_quant(x, -1.0, 1.0)  # 8-bit, 256 levels over [-1, 1]
        ```
    """
    return tf.quantization.fake_quant_with_min_max_vars(
        x, min_value, max_value, num_bits=bits, narrow_range=narrow_range
    )


def fake_quant_per_channel(x, min_values, max_values, bits: int = 8, narrow_range: bool = False):
    """Fake-quantizes a tensor with one range per channel of its last axis.

    TensorFlow's ``fake_quant_with_min_max_vars_per_channel``: each range nudged so that zero lies on its grid,
    straight-through gradient inside the range.

    Args:
        x: A float32 tensor whose last axis is the channel axis.
        min_values: The ranges' lower ends, one per channel.
        max_values: The ranges' upper ends, one per channel.
        bits: Bits of the grid, 2 to 16.
        narrow_range: Leave out the lowest integer (the symmetric grid of int8 TFLite weights).

    Returns:
        ``x`` rounded to each channel's grid and clipped to its range, as a float32 tensor.
    """
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, min_values, max_values, num_bits=bits, narrow_range=narrow_range
    )


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
    levels = 2**bits - (2 if narrow_range else 1)
    return (max_value - min_value) / levels


@keras.saving.register_keras_serializable(package="keras_eff")
class WeightQuantizer:
    """Fake-quantizes a weight tensor from its own range at each call; holds no state.

    ``quantizer(w)`` returns ``w`` on the grid (float, same dtype), with a straight-through gradient. Symmetric
    weights of at most 8 bits lie on the b-bit grid with scale max|w| / (2^(b−1) − 1), which the int8 file stores
    exactly. Keras-serializable.

    Args:
        bits: Bits of the grid, 2 to 16 (int8 TFLite holds at most 8).
        symmetric: Range ±max|w| (what int8 TFLite stores) or [min(min(w), 0), max(w)].
        per_channel: One range per channel of the last axis of the tensor handed in (callers move the output
            channel axis last), or one for the whole tensor.

    Raises:
        ValueError: If ``bits`` is not an integer from 2 to 16.

    Example:
        ```python
        q = keras_eff.quantization.WeightQuantizer(bits=4, per_channel=True)
        kernel_on_grid = q(conv.kernel)
        ```
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
        """Computes the grid step this quantizer uses for a tensor.

        Args:
            w: The weight tensor, channel axis last.

        Returns:
            The step: a vector with one value per channel, or a scalar per tensor. No gradient flows through it.
        """
        lo, hi = self._ranges(ops.stop_gradient(w))
        if self.symmetric:
            return hi / (2 ** (self.bits - 1) - 1)
        return grid_scale(lo, hi, self.bits)

    def tflite_scale(self, w):
        """Computes the symmetric scale the int8 file stores for a tensor: max|w| / (2^(b−1) − 1).

        Divided in float64 and rounded to float32 once: in a traced graph TensorFlow turns a float32 division by a
        constant into a multiplication by its reciprocal, one ulp off at times.

        Args:
            w: The weight tensor, channel axis last.

        Returns:
            A float32 tensor: one scale per channel, or a scalar per tensor.
        """
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
        """Whether int8 TFLite can hold these weights: symmetric and at most 8 bits."""
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
class ActivationQuantizer(ExportView, keras.layers.Layer):
    """A Keras layer that fake-quantizes a tensor with a learned range (asymmetric 8-bit by default).

    In training the range follows an exponential moving average of batch ranges (``ema_decay``; the first batch sets
    it) until ``ranges_frozen`` is set (``keras_eff.callbacks.FreezeRanges``); with ``trainable_range`` the range is
    instead a pair of trainable variables learned by gradient. ``fixed_range`` pins the range (TFLite's fixed output
    ranges). ``keras_eff.calibrate`` collects ranges from data with quantization switched off. The range always
    holds zero.

    Always computes in float32 (its dtype policy is "float32" whatever the global policy: TensorFlow's FakeQuant ops
    take float32 only, and a range must not be rounded to float16). Under ``tf.distribute`` the EMA step uses the
    global batch's min/max (gathered from every replica), and the range variables are ``ONLY_FIRST_REPLICA``: every
    replica holds the value single-device training on the global batch would (docs/distributed.md).

    Args:
        bits: Bits of the grid, 2 to 16 (int8 TFLite needs 8).
        symmetric: A range symmetric about zero instead of [min, max].
        ema_decay: Weight of the old range in each moving-average step, in [0, 1).
        fixed_range: ``(min, max)`` pinning the range; None: learned.
        trainable_range: Learn the range by gradient instead of by moving average.
        model_input: This range quantizes a model's input (``quantize_model`` sets it). At inference (8 bits, not
            traced for export) the input is then rounded as the deployed file's caller does (``tflite_export.quantize``:
            x / s in float64, half away from zero, clipped), not by TensorFlow's FakeQuant formula in float32, which
            settles near-ties the other way at times (1 of 49,152 inputs of a trained transformer, 0.8 % of its
            logits off through the network).
        after_float: This range quantizes the output of a layer ``quantize_model`` kept float (it sets it), so that
            the layer's readers read int8 as in the file; ``quantization_report`` still lists that layer as float.
        traced_from: The name of the stateless layer (a ``Lambda``) whose traced Keras ops this range quantizes
            (``quantize_model`` sets it; ``quantization_report`` lists the layer as traced); None otherwise.
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ...); ``dtype`` is always float32.

    Attributes:
        range_min: The range's lower end (a variable, saved with the model).
        range_max: The range's upper end.
        initialized: 1.0 once the range holds data's values (fixed, calibrated or trained), else 0.0.
        ranges_frozen: 1.0 once the moving average stops (``FreezeRanges``), else 0.0.
        calibrating: True while ``keras_eff.calibrate`` runs data through (the layer then passes its input on).

    Raises:
        ValueError: If ``bits`` is not an integer from 2 to 16, or ``ema_decay`` lies outside [0, 1).

    Example:
        ```python
        x = keras_eff.quantization.ActivationQuantizer(name="input_range")(inputs)
        ```
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        ema_decay: float = 0.99,
        fixed_range=None,
        trainable_range: bool = False,
        model_input: bool = False,
        after_float: bool = False,
        traced_from: str | None = None,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.bits = check_bits(bits, "activation_bits")
        self.symmetric = bool(symmetric)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must lie in [0, 1)")
        self.ema_decay = float(ema_decay)
        self.fixed_range = None if fixed_range is None else tuple(float(v) for v in fixed_range)
        self.trainable_range = bool(trainable_range)
        self.model_input = bool(model_input)
        self.after_float = bool(after_float)
        self.traced_from = None if traced_from is None else str(traced_from)
        self.calibrating = False  # set by keras_eff.calibrate
        self._calibration = None

    def build(self, input_shape=None):
        lo, hi = self.fixed_range or (-1.0, 1.0)
        trainable = self.trainable_range and self.fixed_range is None
        # ONLY_FIRST_REPLICA: an update in a replica function keeps replica 0's value on every replica (all compute the
        # same one from the gathered global min/max); a trainable range is updated by the optimizer as any weight
        first = "only_first_replica"
        self.range_min = self.add_weight(
            name="range_min",
            shape=(),
            initializer=keras.initializers.Constant(lo),
            trainable=trainable,
            dtype="float32",
            aggregation=first,
        )
        self.range_max = self.add_weight(
            name="range_max",
            shape=(),
            initializer=keras.initializers.Constant(hi),
            trainable=trainable,
            dtype="float32",
            aggregation=first,
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            trainable=False,
            dtype="float32",
            initializer=keras.initializers.Constant(1.0 if self.fixed_range else 0.0),
            aggregation=first,
        )
        self.ranges_frozen = self.add_weight(
            name="ranges_frozen", shape=(), initializer="zeros", trainable=False, dtype="float32", aggregation=first
        )

    @property
    def learns_by_ema(self) -> bool:
        """Whether training moves the range by moving average (neither fixed nor trainable)."""
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
        """Moves the range one moving-average step towards the batch's range, unless ranges are frozen.

        The first batch sets the range. Under ``tf.distribute`` the batch's range is the global batch's.

        Args:
            x: The tensor whose range is measured (no gradient flows from the update).

        Returns:
            None. ``range_min``, ``range_max`` and ``initialized`` are assigned.
        """
        lo, hi = self._batch_range(ops.stop_gradient(x))
        first = ops.equal(self.initialized, 0.0)
        frozen = ops.greater(self.ranges_frozen, 0.0)
        d = self.ema_decay
        new_lo = ops.where(first, lo, d * self.range_min + (1 - d) * lo)
        new_hi = ops.where(first, hi, d * self.range_max + (1 - d) * hi)
        self.range_min.assign(ops.where(frozen, self.range_min, new_lo))
        self.range_max.assign(ops.where(frozen, self.range_max, new_hi))
        self.initialized.assign(ops.where(frozen, self.initialized, 1.0))

    def fake_quantize(self, x, training=False):
        """Fake-quantizes a tensor on the current range, without updating it.

        Args:
            x: A tensor of any float dtype.
            training: Whether this is a training step: the range is then used as it is, without the converter's
                nudge of a zero point on a tie (``_converter_nudge``), one step at the range's ends at most, which
                would grow a training graph by some 25 ops per range (NASNetMobile's QAT fit step: +790 MiB peak
                memory, +35 % time). Inference and the exported file compute on the nudged grid.

        Returns:
            ``x`` on the range's ``bits``-bit grid, as float32.
        """
        x = ops.cast(x, "float32")  # called directly by wrappers too, on a tensor of any float dtype
        lo, hi = self.bounds()
        if not (self._export_view or training):  # the converter nudges the exported range itself, in double
            tie, lo64, hi64 = self._converter_nudge()
            lo = ops.where(tie, ops.cast(lo64, "float32"), lo)
            hi = ops.where(tie, ops.cast(hi64, "float32"), hi)
        return fake_quant(x, lo, hi, self.bits, narrow_range=False)

    def grid_step(self):
        """Computes the step of this range's grid (the nudge onto zero moves the range but keeps its width).

        Returns:
            A scalar float32 tensor.
        """
        lo, hi = self.bounds()
        return grid_scale(lo, hi, self.bits)

    def bounds(self, dtype="float32"):
        """The range the grid spans: widened to hold zero, and to `MIN_WIDTH` at least (about the middle, for a
        symmetric range).

        Args:
            dtype: ``"float32"`` or ``"float64"`` (the converter reads the range in double).

        Returns:
            ``(min, max)`` as scalar tensors of ``dtype``.
        """
        lo = ops.minimum(ops.cast(self.range_min, dtype), 0.0)
        hi = ops.maximum(ops.cast(self.range_max, dtype), 0.0)
        if self.symmetric:
            m = ops.maximum(ops.maximum(-lo, hi), MIN_WIDTH / 2)
            return -m, m
        return lo, ops.maximum(hi, lo + MIN_WIDTH)

    def call(self, x, training=None):
        if self.calibrating:
            self._record(x)
            return x
        if training and self.learns_by_ema:
            self.update_range(x)
        elif training and self.trainable_range and self.fixed_range is None:
            self.initialized.assign(1.0)  # the range is learned by gradient from this step on
        if self.model_input and not training and not self._export_view and self.bits == 8:
            return self._round_as_runtime(x)
        return self.fake_quantize(x, training=training)

    def _round_as_runtime(self, x):
        """``x`` onto the grid as ``tflite_export.quantize`` puts a float input on the file's int8 input."""
        s = ops.cast(self.tflite_scale(), "float64")
        z = ops.cast(self.tflite_zero_point(), "float64")
        q = ops.clip(integer.round_half_away(ops.cast(x, "float64") / s) + z, -128.0, 127.0)
        return ops.cast(s * (q - z), "float32")

    def _record(self, x):
        lo, hi = (float(v) for v in self._batch_range(x))
        if self._calibration is None:
            self._calibration = [lo, hi]
        else:
            self._calibration = [min(self._calibration[0], lo), max(self._calibration[1], hi)]

    def finish_calibration(self):
        """Ends calibration: sets the range to the min/max calibration saw (fixed ranges stay as they are).

        Returns:
            None. The range is assigned (where data was seen) and ``calibrating`` is reset to False.
        """
        if self._calibration is not None and self.fixed_range is None:
            self.range_min.assign(self._calibration[0])
            self.range_max.assign(self._calibration[1])
            self.initialized.assign(1.0)
        self._calibration = None
        self.calibrating = False

    def _converter_nudge(self):
        """Where the zero point of this range is a tie (−min/scale ends in .5, as for a range symmetric about 0):
        ``(True, min, max)`` already nudged onto the grid the converter makes, else ``(False, ...)``.

        The converter nudges in double on the unsigned grid and rounds the tie up ([−1, 1]: zero point 0);
        TensorFlow's fake-quant op nudges in float32, where the tie lands a hair below .5 and rounds down (zero point
        −1): the simulation's grid would be one step off the file's at both ends. Handing the op (and the file) the
        nudged range removes the tie for both."""
        lo, hi = self.bounds("float64")  # as the converter reads the exported range
        levels = 2.0**self.bits - 1
        scale = (hi - lo) / levels
        t = -lo / scale
        tie = ops.less(ops.abs(t - ops.floor(t) - 0.5), 1e-4)
        zero = ops.clip(ops.floor(t + 0.5), 0.0, levels)
        return tie, -zero * scale, (levels - zero) * scale

    def tflite_scale(self):
        """Computes the scale the int8 file stores for this range.

        The converter takes the range's width in double; ``grid_step`` subtracts in float32 and can be one ulp off.

        Returns:
            A scalar float32 tensor.
        """
        lo, hi = self.bounds("float64")  # as the converter reads the exported range
        return ops.cast((hi - lo) / (2**self.bits - 1), "float32")

    def tflite_zero_point(self):
        """Computes the zero point the int8 file stores for this range.

        The converter's nudge: −min/scale rounded half away from zero on the unsigned grid (0 … 2^bits − 1, where
        min ≤ 0 makes it non-negative), then shifted by −2^(bits−1): on the signed grid that is rounding half up. A
        range symmetric about 0 ([−1, 1]) gets zero point 0, not −1 (a tie on the signed grid, which TFLite's int8
        file does not break away from zero).

        Returns:
            A scalar float32 tensor holding an integer.
        """
        lo, hi = self.bounds("float64")  # as the converter reads the exported range
        qmin = -(2.0 ** (self.bits - 1))
        z = ops.floor(qmin - lo / ((hi - lo) / (2**self.bits - 1)) + 0.5)
        return ops.cast(ops.clip(z, qmin, -qmin - 1.0), "float32")

    @property
    def scale(self) -> float:
        """The current grid step as a Python float (read from the variables: eager only)."""
        lo, hi = (float(v) for v in self.bounds())
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
        """Lists this range if it was never set: the ``tflite_export.ranges`` protocol.

        ``to_tflite`` refuses a model while any of its ranges was neither calibrated nor trained.

        Returns:
            ``[self.name]`` while the range was never set, else ``[]``.
        """
        return [] if self.range_set else [self.name]

    def export_problems(self) -> list:
        """Says what int8 TFLite cannot hold of this range's settings (the export check's protocol).

        Returns:
            A list of messages naming this range; empty when it is 8-bit.
        """
        if self.bits != 8:
            return [f"activation range {self.name!r}: activation_bits={self.bits} (int8 TFLite activations are 8-bit)"]
        return []

    def get_config(self):
        config = super().get_config()
        config.update(
            bits=self.bits,
            symmetric=self.symmetric,
            ema_decay=self.ema_decay,
            fixed_range=self.fixed_range,
            trainable_range=self.trainable_range,
            model_input=self.model_input,
            after_float=self.after_float,
            traced_from=self.traced_from,
        )
        return config
