"""MultiHeadAttention as int8 TFLite runs it: every projection one FULLY_CONNECTED, the scores and the weighted sum
BATCH_MATMULs, the softmax on TFLite's fixed grid, each tensor between them on a range of its own.

``quantize_model`` swaps a ``keras.layers.MultiHeadAttention`` of the common form (self- or cross-attention without
masks, gates, sliding windows or score outputs; query, key and value of shape (batch, steps, features)) for this
layer, with the projections' weights copied: they stay trainable and are fake-quantized per tensor (the converter
holds one scale for a FULLY_CONNECTED's weights here). Other forms stay float and are reported.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..layers import FIXED_RANGES
from .composite import CompositeQuantized
from .quantizers import ActivationQuantizer, WeightQuantizer

PROJECTIONS = ("query", "key", "value", "output")
STEPS = ("query", "query_scaled", "key", "value", "scores", "probabilities", "context", "output")


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


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedAttention(CompositeQuantized):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.value_dim = int(num_heads), int(key_dim), int(value_dim)
        self.output_dim, self.use_bias = int(output_dim), bool(use_bias)
        self.weight_bits, self.bits, self.symmetric, self.ema_decay = (
            int(weight_bits),
            int(bits),
            bool(symmetric),
            float(ema_decay),
        )
        act = dict(bits=bits, symmetric=symmetric, ema_decay=ema_decay)
        self._init_steps(
            STEPS,
            quantizers,
            lambda step: ActivationQuantizer(
                **act,
                fixed_range=FIXED_RANGES["softmax"] if step == "probabilities" else None,
                name=f"{self.name}_{step}_range",
            ),
        )
        self.weight_quantizer = WeightQuantizer(weight_bits, True, False)

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

    def _project(self, name, x, q, training):
        """One FULLY_CONNECTED: (batch·steps, features) @ kernel (+ bias), on its range."""
        steps = x.shape[1]
        kernel = self.weight_quantizer(getattr(self, f"{name}_kernel"))
        y = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), kernel)
        if self.use_bias:
            y = y + getattr(self, f"{name}_bias")
        return ops.reshape(q(y, training=training), (-1, steps, kernel.shape[-1]))

    def _heads(self, x, dim):
        """(batch, steps, heads·dim) → (batch, heads, steps, dim)."""
        return ops.transpose(ops.reshape(x, (-1, x.shape[1], self.num_heads, dim)), (0, 2, 1, 3))

    def call(self, query, value, key=None, training=None):
        key = value if key is None else key
        q = dict(zip(STEPS, self.step_quantizers))
        qh = self._heads(self._project("query", query, q["query"], training), self.key_dim)
        qh = q["query_scaled"](qh * (1.0 / float(np.sqrt(self.key_dim))), training=training)
        kh = self._heads(self._project("key", key, q["key"], training), self.key_dim)
        vh = self._heads(self._project("value", value, q["value"], training), self.value_dim)
        scores = q["scores"](ops.matmul(qh, ops.transpose(kh, (0, 1, 3, 2))), training=training)
        probabilities = q["probabilities"](ops.softmax(scores, axis=-1), training=training)
        context = q["context"](ops.matmul(probabilities, vh), training=training)  # (batch, heads, steps, dim)
        steps = query.shape[1]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, steps, self.num_heads * self.value_dim))
        return self._project("output", context, q["output"], training)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "output_dim": self.output_dim,
            "use_bias": self.use_bias,
            "weight_bits": self.weight_bits,
            "bits": self.bits,
            "symmetric": self.symmetric,
            "ema_decay": self.ema_decay,
        }


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
