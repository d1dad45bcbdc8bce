"""A Keras op with one constant operand (``x + 1.0``, ``x * 2.0 - 1.0``, ``x - mean``) as the int8 file computes it.

The converter keeps the constant as an int8 tensor on its own grid (``integer_inference.on_constant_grid``) and runs
ADD, SUB or MUL on the integers. Computed in float and rounded onto the output grid, the result settles rounding ties
otherwise than XNNPACK's ADD does: preprocessing written as ``x * 2.0 - 1.0`` at a model's input, whose grids
align, was 2 LSB off at the model's output. At inference, with the input's grid known, this layer computes what the
chosen kernels compute (``integer_inference.add``, ``multiply``)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..layers import LayerFacts
from . import integer_inference as integer
from .composite import CompositeQuantized, PlacedInput
from .export_view import ExportView
from .wrapper import FUSED_ACTIVATIONS, _fused

OPS = ("add", "subtract", "multiply")


class LearnedConstant:
    """A constant operand that may be learned: a custom layer's variable (``x * self.gamma``), or what Keras ops
    compute from its variables (``ops.sigmoid(self.gate)``), as ``quantize_model`` traces them. The converter folds
    such a constant into the file; here it stays trainable, as weights of this layer.

    ``constant`` is the operand's value (a learned one's start); with ``learned``, ``function`` (a functional model of
    Keras ops, one input per weight, saved in the config) computes it from the weights, or, None, the one weight is the
    constant itself."""

    function: keras.Model | None
    built: bool  # (the Keras layer's)

    def _init_constant(self, constant, learned, function):
        self.constant = np.asarray(constant, np.float32)
        self.learned = bool(learned)
        if isinstance(function, dict):
            function = keras.saving.deserialize_keras_object(function)
        if function is not None and not (self.learned and isinstance(function, keras.Model)):
            raise ValueError(f"{type(self).__name__}: function is a Keras functional model, and needs learned=True")
        object.__setattr__(self, "function", function)  # not a sub-layer: no weights, saved in the config

    def _build_constant(self):
        """A learned constant's weights (``learned_weights``)."""
        if self.learned and self.function is None:
            init = keras.initializers.Constant(self.constant)
            self.learned_weights = [self.add_weight(name="constant", shape=self.constant.shape, initializer=init)]
        elif self.learned:
            self.learned_weights = [
                self.add_weight(name=f"variable_{i}", shape=t.shape, initializer="zeros")
                for i, t in enumerate(self.function.inputs)
            ]

    def start_learning_from(self, input_shape, values):
        """Builds the layer for ``input_shape`` and sets its learned weights to ``values`` (copies of the traced
        variables' values)."""
        self.build(input_shape)
        for weight, value in zip(self.learned_weights, values):
            weight.assign(value)

    @property
    def learned_constant(self):
        """A learned constant's value now (a tensor), from its weights."""
        w = self.learned_weights
        if self.function is None:
            return w[0].value
        return ops.cast(self.function(w if len(w) > 1 else w[0]), "float32")

    def _constant_config(self) -> dict:
        """The config fields of the constant (a learned one saves its current value; its weights load after)."""
        value = np.asarray(self.learned_constant) if self.learned and self.built else self.constant
        return {
            "constant": value.tolist(),
            "learned": self.learned,
            "function": None if self.function is None else keras.saving.serialize_keras_object(self.function),
        }


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedConstantOp(LearnedConstant, PlacedInput, CompositeQuantized):
    """``x (op) constant`` or ``constant (op) x`` for ADD, SUB and MUL, its output on a range of its own.

    Args:
        op: ``"add"``, ``"subtract"`` or ``"multiply"``.
        constant: The constant operand: a number or a (nested) list, broadcast against the input.
        constant_first: The constant is the first operand (``1.0 - x``).
        learned: The constant is trainable (a custom layer's variable, ``x * self.gamma``, or what Keras ops compute
            from its variables, ``function``): it trains through its grid (a straight-through estimator), and the
            file holds its grid when exported.
        function: With ``learned``, a functional model of Keras ops from weights of this layer (one per input, of
            its input's shape, set with ``set_weights``) to the constant (``ops.sigmoid(gate)``); None: the constant
            is one weight itself, starting at ``constant``.
        fused_activation: ``"linear"``, or ``"relu"``, ``"relu6"``, ``"hard_tanh"`` fused into the op as in the file.
        bits: Bits of the output range.
        symmetric: A symmetric output range.
        ema_decay: Decay of the moving average that trains the range.
        quantizers: The output quantizer, from a saved config (leave None).
        integer_kernels: Whose integer arithmetic inference reproduces (``set_integer_kernels``).
        input_range: The input's grid, from a saved config (``placement.place_ranges`` hands it in otherwise).
        **kwargs: Keras layer arguments (``name`` ...).

    Raises:
        ValueError: If ``op`` or ``fused_activation`` is not one of those.

    Example:
        ```python
        y = keras_eff.quantization.QuantizedConstantOp("multiply", 2.0, name="scale")(x)
        ```
    """

    def __init__(
        self,
        op,
        constant,
        constant_first=False,
        fused_activation="linear",
        learned=False,
        function=None,
        bits=8,
        symmetric=False,
        ema_decay=0.99,
        quantizers=None,
        integer_kernels="xnnpack",
        input_range=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if op not in OPS:
            raise ValueError(f"QuantizedConstantOp: op={op!r}; one of {', '.join(OPS)}")
        if fused_activation not in FUSED_ACTIVATIONS:
            raise ValueError(
                f"QuantizedConstantOp: fused_activation={fused_activation!r}; one of {', '.join(FUSED_ACTIVATIONS)}"
            )
        self.op = op
        self._init_constant(constant, learned, function)
        self.constant_first = bool(constant_first)
        self.fused_activation = fused_activation
        self._on_grid = integer.on_constant_grid(self.constant)  # (a fixed constant's, computed once)
        self._init_activation_steps(("output",), bits, symmetric, ema_decay, quantizers, integer_kernels)
        self._place_saved(input_range)  # the input's grid (placement.place_ranges)

    def compute_output_shape(self, input_shape):
        shape = list(np.broadcast_shapes(tuple(1 if d is None else d for d in input_shape), self.constant.shape))
        offset = len(shape) - len(input_shape)
        for i, d in enumerate(input_shape):  # an unknown size (the batch) stays unknown where the constant is 1 wide
            if d is None and shape[offset + i] == 1:
                shape[offset + i] = None
        return tuple(shape)

    def build(self, input_shape):
        self._build_constant()
        super().build(input_shape)

    def _constant_on_grid(self):
        """The constant as the file holds it (its int8 grid); a learned one trains through it (straight through)."""
        if not self.learned:
            return self._on_grid
        c = self.learned_constant
        if self.constant.size <= 1:  # a scalar lands on its grid exactly
            return c
        return c + ops.stop_gradient(integer.constant_grid(c)[0] - c)

    def _float(self, x):
        """The op on the constant as the file holds it (its int8 grid), in float."""
        c = self._constant_on_grid()
        a, b = (c, x) if self.constant_first else (x, c)
        return {"add": ops.add, "subtract": ops.subtract, "multiply": ops.multiply}[self.op](a, b)

    def _integer(self, x):
        """The op on the integers as the chosen kernels compute it, onto the output grid."""
        out = self.final_quantizer
        grid, s_c = integer.constant_grid(self.learned_constant if self.learned else self.constant)
        c = ops.cast(grid, "float32") * ops.ones_like(x)
        s_in = self._input_range.tflite_scale()
        if self.op == "multiply":
            return integer.multiply([x, c], [s_in, s_c], out.tflite_scale(), self.integer_kernels)
        kernels = self.integer_kernels
        if self.op == "subtract":  # SUB: ADD with the second operand's multiplier negated
            x, c = (-x, c) if self.constant_first else (x, -c)
            # LiteRT's int8 SUB is its reference kernel (rounding ties away from zero), also with the built-in
            # kernels, whose ADD is the optimized one (ties upward)
            kernels = "micro" if kernels == "builtin" else kernels
        return integer.add([x, c], [s_in, s_c], out.tflite_scale(), kernels)

    def call(self, x, training=None):
        out = self.final_quantizer
        if self._emulates(training, self._input_range, out):
            y = self._integer(x)
        else:
            y = self._float(x)
        return out(_fused(self.fused_activation, y), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "op": self.op,
            **self._constant_config(),
            "constant_first": self.constant_first,
            "fused_activation": self.fused_activation,
        }


@keras.saving.register_keras_serializable(package="keras_eff")
class ClipOnInputGrid(LearnedConstant, PlacedInput, ExportView, keras.layers.Layer):
    """``ops.maximum(x, low)``, ``ops.minimum(x, high)`` or ``ops.clip(x, low, high)`` with constant bounds, on its
    input's grid: TFLite's int8 MAXIMUM and MINIMUM keep one grid for inputs and output, the constant rounded onto
    it. A range of its own made the file requantize (2–3 LSB off).

    Args:
        low: The lower bound (a number or a list broadcast against the input), or None.
        high: The upper bound, or None.
        learned: The one bound given is trainable (a custom layer's ``ops.maximum(x, self.floor)``, or a bound Keras
            ops compute from its variables, ``function``): it trains through the input's grid (straight through),
            and the file holds it on that grid.
        function: With ``learned``, a functional model of Keras ops from weights of this layer to the bound, as for
            `QuantizedConstantOp`; None: the bound is one weight itself, starting at its value.
        traced_from: The name of the custom layer or ``Lambda`` whose op this is (``quantize_model`` sets it: with no
            range of its own, the layer records it for ``quantization_report``).
        input_range: The input's grid, from a saved config (``placement.place_ranges`` hands it in otherwise).
        **kwargs: Keras layer arguments (``name`` ...).

    Raises:
        ValueError: If neither bound is given, or both with ``learned``.

    Example:
        ```python
        y = keras_eff.quantization.ClipOnInputGrid(high=0.5)(x)  # ops.minimum(x, 0.5) on x's grid
        ```
    """

    def __init__(self, low=None, high=None, learned=False, function=None, traced_from=None, input_range=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if low is None and high is None:
            raise ValueError("ClipOnInputGrid: give low, high or both")
        if learned and low is not None and high is not None:
            raise ValueError("ClipOnInputGrid: learned=True takes one bound, low or high")
        self.low = None if low is None else np.asarray(low, np.float32)
        self.high = None if high is None else np.asarray(high, np.float32)
        self._init_constant(self.high if self.low is None else self.low, learned, function)
        self.traced_from = None if traced_from is None else str(traced_from)
        self._place_saved(input_range)

    def keras_eff_facts(self):
        return LayerFacts(output_range="inherit", channels="pass")

    def compute_output_shape(self, input_shape):
        return input_shape

    def build(self, input_shape):
        self._build_constant()
        self.built = True

    def _bound(self, value, training):
        """A bound where the file holds it: rounded onto the input's grid once that grid is known."""
        q = self._input_range
        if value is None or q is None or q.calibrating or self._export_view:
            return value
        return q.fake_quantize(ops.convert_to_tensor(value), training=training)

    def call(self, x, training=None):
        low, high = self.low, self.high
        if self.learned and low is not None:
            low = self.learned_constant
        elif self.learned:
            high = self.learned_constant
        high, low = self._bound(high, training), self._bound(low, training)
        if high is not None:
            x = ops.minimum(x, high)
        return x if low is None else ops.maximum(x, low)

    def get_config(self):
        config = {**super().get_config(), **self._constant_config()}
        bound = config.pop("constant")  # a learned bound's current value
        low, high = self.low, self.high
        return {
            **config,
            "traced_from": self.traced_from,
            "low": None if low is None else (bound if self.learned else low.tolist()),
            "high": None if high is None else (bound if self.learned and low is None else high.tolist()),
        }
