"""MultiHeadAttention as int8 TFLite runs it: every projection one FULLY_CONNECTED, the scores and the weighted sum
BATCH_MATMULs, the softmax on TFLite's fixed grid, each tensor between them on a range of its own.

``quantize_model`` swaps a ``keras.layers.MultiHeadAttention`` of the common form (self- or cross-attention without
masks, gates, sliding windows or score outputs; query, key and value of shape (batch, steps, features)) for this
layer, with the projections' weights copied: they stay trainable and are fake-quantized per tensor (the converter
holds one scale for a FULLY_CONNECTED's weights here). Other forms stay float and are reported.

At inference with integer emulation on (``integer_kernels``, any of the three sets) and the grids known, every op
computes as LiteRT does. The projections are FULLY_CONNECTEDs: the exact integer accumulator with the int32 bias,
requantized as the chosen kernels do (``integer_inference.requantize_linear``; they need the inputs' grids, which
``placement.place_ranges`` hands in). The query's scaling is a MUL by 1/√key_dim, a constant on the grid the converter
gives it. The two BATCH_MATMULs requantize the exact integer product by the multiplier of s_a·s_b / s_out in gemmlowp's
fixed point: a rounding doubling high multiply, then a rounding divide by a power of two, ties away from zero. Those
two roundings settle near-ties the other way from one rounding of the exact product in about 0.3 % of outputs.
XNNPACK takes an int8 BATCH_MATMUL only where its second input's zero point is 0 (LiteRT's delegate refuses others),
and then requantizes as its GEMMs do, the product times s_a·s_b / s_out in float32, half to even; elsewhere LiteRT's
interpreter runs the built-in kernel. Measured: 0 of 16,384 outputs off on both kernel sets where neither second input
had zero point 0, where one rounding of the exact product missed 48 and 54; where the value's zero point was 0,
4.2 ‰ of that BATCH_MATMUL's outputs were 1 off under XNNPACK until it was emulated so (0 after). The softmax is
LiteRT's int8 SOFTMAX (``integer_inference.softmax``: a float32 exp table, a float32 sum, rounding half away; XNNPACK
takes only float softmaxes): the float softmax on its fixed grid had 1 output in 10⁴ one off in a two-block
transformer. Against TFLite Micro ("micro") the projections, MUL and BATCH_MATMULs use the built-in formulas and the
softmax the float one; a two-block transformer with a ReLU MLP is bit-exact against TFLite Micro
(tests/test_transformer_int8.py).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..layers import FIXED_RANGES
from . import integer_inference as integer
from .composite import CompositeQuantized
from .quantizers import WeightQuantizer
from .wrapper import _in_saving_scope, _load, _shared_config

PROJECTIONS = ("query", "key", "value", "output")
STEPS = ("query", "query_scaled", "key", "value", "scores", "probabilities", "context", "output")
_SOFTMAX_STEP = {"probabilities": FIXED_RANGES["softmax"]}  # the attention weights, on SOFTMAX's fixed grid


def supported_reason(mha, node) -> str | None:
    """Why this MultiHeadAttention call cannot be swapped, or None."""
    if getattr(mha, "_use_gate", False):
        return "gated attention"
    if getattr(mha, "_sliding_window", None) is not None:
        return "sliding-window attention"
    kwargs = node.arguments.kwargs if hasattr(node, "arguments") else {}
    for name in ("attention_mask", "query_mask", "value_mask", "key_mask"):
        if kwargs.get(name) is not None:
            return f"an {name}"
    if kwargs.get("return_attention_scores") or kwargs.get("use_causal_mask"):
        return "attention scores returned or a causal mask"
    shapes = [t.shape for t in node.input_tensors]
    if any(len(s) != 3 or None in s[1:] for s in shapes):
        return "inputs other than (batch, steps, features) of known size"
    if tuple(mha._output_shape or ()) not in ((), (shapes[0][-1],)) and mha._output_shape is not None:
        return "a custom output_shape"
    return None


class _AttentionSteps:
    """What both quantized attentions share: the inputs' grids (query, value, key), the int8 BATCH_MATMUL and the
    SOFTMAX on TFLite's fixed grid."""

    def place(self, *input_ranges):
        """Takes the ranges of the inputs' grids, in call order (query, value, key; ``placement.place_ranges`` calls
        it): references, not sub-layers (the layers that own them train and save them)."""
        object.__setattr__(self, "_input_ranges", list(input_ranges))

    def _place_saved(self, input_ranges):
        """``place`` with the ranges of a saved config (the same objects their producers hold), or with none."""
        self.place(*([_load(r) for r in input_ranges or ()] if _in_saving_scope() else []))

    def get_config(self):
        return {
            **super().get_config(),
            "input_ranges": [None if r is None else _shared_config(r) for r in self._input_ranges],
        }

    def _source(self, index):
        """The range of the grid of input ``index`` (0 query, 1 value, 2 key: the value where no key was given)."""
        ranges = self._input_ranges
        if index == 2 and len(ranges) < 3:
            index = 1
        return ranges[index] if index < len(ranges) else None

    def _batch_matmul(self, a, b, qa, qb, q_out, training):
        """``a @ b`` onto ``q_out``'s grid: LiteRT's int8 BATCH_MATMUL at inference with integers (module docstring),
        the float product fake-quantized otherwise."""
        if not self._emulates(training, qa, qb, q_out):
            return q_out(ops.matmul(a, b), training=training)
        s_a, s_b, s_out = qa.tflite_scale(), qb.tflite_scale(), q_out.tflite_scale()
        acc = ops.matmul(integer.integers(a, s_a), integer.integers(b, s_b))  # exact in float64
        codes = integer.requantize_linear(acc, s_a, s_b, s_out, "micro")  # "micro": RoundingDivideByPOT, ties away
        if self.integer_kernels == "xnnpack":  # XNNPACK takes it where b's zero point is 0 (module docstring)
            taken = ops.equal(qb.tflite_zero_point(), 0.0)
            codes = ops.where(taken, integer.requantize_linear(acc, s_a, s_b, s_out, "xnnpack"), codes)
        return q_out.fake_quantize(codes * s_out)  # clamped onto the grid

    def _softmax(self, scores, q_in, q_out, training):
        """The attention weights on TFLite's fixed 1/256 grid: at inference with integers, LiteRT's int8 SOFTMAX
        (``integer_inference.softmax``; on TFLite Micro, whose kernel is another, the float softmax)."""
        if self.integer_kernels not in integer.LITERT_KERNELS or not self._emulates(training, q_in, q_out):
            return q_out(ops.softmax(scores, axis=-1), training=training)
        return q_out.fake_quantize(integer.softmax(scores, q_in.tflite_scale(), q_out.tflite_scale()))


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedAttention(_AttentionSteps, CompositeQuantized):
    """Multi-head attention computed with fake-quantized projections and ranges on every intermediate tensor."""

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim,
        output_dim,
        use_bias=True,
        weight_bits=8,
        bits=8,
        symmetric=False,
        ema_decay=0.99,
        quantizers=None,
        integer_kernels="xnnpack",
        input_ranges=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.value_dim = int(num_heads), int(key_dim), int(value_dim)
        self.output_dim, self.use_bias = int(output_dim), bool(use_bias)
        self.weight_bits = int(weight_bits)
        self._init_activation_steps(STEPS, bits, symmetric, ema_decay, quantizers, integer_kernels, _SOFTMAX_STEP)
        self.weight_quantizer = WeightQuantizer(weight_bits, True, False)
        self._place_saved(input_ranges)  # the inputs' grids (placement.place_ranges)

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dims = {
            "query": (query_shape[-1], h * kd),
            "key": (key_shape[-1], h * kd),
            "value": (value_shape[-1], h * vd),
            "output": (h * vd, self.output_dim),
        }
        for name, (fan_in, fan_out) in dims.items():
            setattr(self, f"{name}_kernel", self.add_weight(name=f"{name}_kernel", shape=(fan_in, fan_out)))
            if self.use_bias:
                setattr(
                    self, f"{name}_bias", self.add_weight(name=f"{name}_bias", shape=(fan_out,), initializer="zeros")
                )
        self._build_steps()
        self.built = True

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self.output_dim,)

    def _project(self, name, x, source, q, training):
        """One FULLY_CONNECTED: (batch·steps, features) @ kernel (+ bias), onto ``q``'s grid; with integers where
        ``source`` (the input's grid) is known and inference emulates LiteRT."""
        steps = x.shape[1]
        flat = ops.reshape(x, (-1, x.shape[-1]))
        raw = getattr(self, f"{name}_kernel")
        kernel = self.weight_quantizer(raw)
        bias = getattr(self, f"{name}_bias") if self.use_bias else None
        if self._emulates(training, source, q):
            s_in, s_w, s_out = source.tflite_scale(), self.weight_quantizer.tflite_scale(raw), q.tflite_scale()
            acc = ops.matmul(integer.integers(flat, s_in), integer.integers(kernel, s_w))  # exact in float64
            if bias is not None:  # the file's int32 bias
                acc = acc + ops.cast(integer.round_half_away(bias / (s_in * s_w)), "float64")
            y = q.fake_quantize(integer.requantize_linear(acc, s_in, s_w, s_out, self.integer_kernels) * s_out)
        else:
            y = ops.matmul(flat, kernel)
            y = q(y if bias is None else y + bias, training=training)
        return ops.reshape(y, (-1, steps, kernel.shape[-1]))

    def _heads(self, x, dim):
        """(batch, steps, heads·dim) → (batch, heads, steps, dim)."""
        return ops.transpose(ops.reshape(x, (-1, x.shape[1], self.num_heads, dim)), (0, 2, 1, 3))

    def _scale_query(self, qh, q_in, q_out, training):
        """qh · 1/√key_dim onto ``q_out``'s grid: at inference with integers, the file's MUL by the constant on the
        grid the converter gives it."""
        factor = 1.0 / float(np.sqrt(self.key_dim))
        if not self._emulates(training, q_in, q_out):
            return q_out(qh * factor, training=training)
        s_c = integer.constant_scale(factor)
        constant = ops.cast(round(factor / s_c) * s_c, "float32") * ops.ones_like(qh)
        scales = [q_in.tflite_scale(), s_c]
        return q_out.fake_quantize(integer.multiply([qh, constant], scales, q_out.tflite_scale(), self.integer_kernels))

    def call(self, query, value, key=None, training=None):
        key = value if key is None else key
        q = dict(zip(STEPS, self.step_quantizers))
        qh = self._heads(self._project("query", query, self._source(0), q["query"], training), self.key_dim)
        qh = self._scale_query(qh, q["query"], q["query_scaled"], training)
        kh = self._heads(self._project("key", key, self._source(2), q["key"], training), self.key_dim)
        vh = self._heads(self._project("value", value, self._source(1), q["value"], training), self.value_dim)
        kt = ops.transpose(kh, (0, 1, 3, 2))
        scores = self._batch_matmul(qh, kt, q["query_scaled"], q["key"], q["scores"], training)
        probabilities = self._softmax(scores, q["scores"], q["probabilities"], training)
        context = self._batch_matmul(probabilities, vh, q["probabilities"], q["value"], q["context"], training)
        steps = query.shape[1]  # context: (batch, heads, steps, dim) → (batch, steps, heads·dim)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, steps, self.num_heads * self.value_dim))
        return self._project("output", context, q["context"], q["output"], training)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "output_dim": self.output_dim,
            "use_bias": self.use_bias,
            "weight_bits": self.weight_bits,
        }


DOT_STEPS = ("scores", "probabilities", "output")


def dot_supported_reason(layer, node) -> str | None:
    """Why this ``keras.layers.Attention`` call cannot be swapped for a ``QuantizedDotAttention``, or None."""
    if layer.score_mode != "dot" or layer.use_scale:
        return "learned score scaling or concat scores"
    if float(layer.dropout) > 0.0:
        return "dropout on the attention weights"
    kwargs = node.arguments.kwargs if hasattr(node, "arguments") else {}
    if kwargs.get("mask") is not None or kwargs.get("use_causal_mask") or kwargs.get("return_attention_scores"):
        return "a mask, a causal mask or attention scores returned"
    shapes = [t.shape for t in node.input_tensors]
    if len(shapes) not in (2, 3) or any(len(s) != 3 or None in s[1:] for s in shapes):
        return "inputs other than [query, value(, key)] of shape (batch, steps, features)"
    return None


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedDotAttention(_AttentionSteps, CompositeQuantized):
    """``keras.layers.Attention`` (dot-product scores, no scale, no mask) as int8 TFLite runs it: BATCH_MATMUL of the
    query and the key, SOFTMAX on its fixed grid, BATCH_MATMUL with the value, each onto a range of its own."""

    def __init__(
        self,
        bits=8,
        symmetric=False,
        ema_decay=0.99,
        quantizers=None,
        integer_kernels="xnnpack",
        input_ranges=None,
        **kw,
    ):
        super().__init__(**kw)
        self._init_activation_steps(DOT_STEPS, bits, symmetric, ema_decay, quantizers, integer_kernels, _SOFTMAX_STEP)
        self._place_saved(input_ranges)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (input_shape[1][-1],)

    def call(self, inputs, training=None):
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        q = dict(zip(DOT_STEPS, self.step_quantizers))
        kt = ops.transpose(key, (0, 2, 1))
        scores = self._batch_matmul(query, kt, self._source(0), self._source(2), q["scores"], training)
        weights = self._softmax(scores, q["scores"], q["probabilities"], training)
        return self._batch_matmul(weights, value, q["probabilities"], self._source(1), q["output"], training)


def from_attention(mha, spec_kwargs, weight_bits, shapes) -> QuantizedAttention:
    """A QuantizedAttention with ``mha``'s weights (EinsumDense kernels reshaped to 2-D)."""
    output_dim = shapes[0][-1] if mha._output_shape is None else int(np.prod(mha._output_shape))
    layer = QuantizedAttention(
        mha.num_heads,
        mha.key_dim,
        mha.value_dim or mha.key_dim,
        output_dim=output_dim,
        use_bias=mha.use_bias,
        weight_bits=weight_bits,
        name=mha.name,
        **spec_kwargs,
    )
    layer.build(*shapes)
    for name in PROJECTIONS:
        dense = getattr(mha, f"_{name}_dense")
        kernel = np.asarray(dense.kernel)
        getattr(layer, f"{name}_kernel").assign(kernel.reshape(getattr(layer, f"{name}_kernel").shape))
        if mha.use_bias:
            bias = np.asarray(dense.bias)
            getattr(layer, f"{name}_bias").assign(bias.reshape(-1))
    return layer
