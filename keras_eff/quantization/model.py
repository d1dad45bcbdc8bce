"""quantize_model for whole Functional and Sequential models, and the per-layer ``quantize`` decorator.

Quantizers sit where int8 TFLite materializes tensors, as the registry of layer facts (``keras_eff.layers``) says
for each layer: the model input; the output of every conv/dense layer after its folded BatchNorm and fused
ReLU/ReLU6; the output of Add, Multiply, standalone BatchNorm and activations (fixed ranges for softmax, sigmoid,
tanh); one range shared by the inputs and output of a Concatenate or an average pooling (TFLite keeps them on one
grid). Max pooling, reshaping, padding and dropout inherit their input's range. A stateless layer the registry does
not know (a ``Lambda``) is traced into its Keras ops; any other it does not know stays float and is reported. Once
the new graph is built, ``placement.place_ranges`` hands each wrapper the ranges of its neighbours, once.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import layers, ops

from ..checks import check_finite_weights
from ..errors import UnsupportedModelError
from ..graph import (
    activation_kind,
    clone_layer,
    functional_of,
    holds_state,
    is_foldable_bn,
    layers_with,
    name_list,
    rebuild,
    reuse_or_clone,
)
from ..layers import FIXED_RANGES as _ACTIVATION_RANGES
from ..layers import facts_for
from ..options import resolve_config
from . import activation_steps, attention, integer_inference, layer_ops, tracing
from . import preserve as preserve_lib
from .composite import CompositeQuantized
from .config import QuantConfig
from .constant_op import ClipOnInputGrid, QuantizedConstantOp
from .layer_norm import QuantizedNormalization
from .placement import place_ranges
from .quantized_activation import QuantizedActivation
from .quantizers import ActivationQuantizer
from .report import NO_IMPLEMENTATION, SKIPPED, QuantizationReport, owned_ranges
from .wrapper import FUSED_ACTIVATIONS, QuantizeWrapper, activation_name

_OP_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "HardTanh": "hard_tanh"}  # Keras op nodes, by class name
_CLIPS = {(0.0, 6.0): "relu6", (-1.0, 1.0): "hard_tanh"}
_BINARY_OPS = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")
_CONSTANT_OPS = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "TrueDivide": "divide",
    "Divide": "divide",
}


def _fusable_activation(layer, node=None) -> str | None:
    """'relu', 'relu6' or 'hard_tanh' where the layer (or Keras op node: ``ops.relu6(x)``, ``ops.clip(x, -1, 1)``,
    ``ops.maximum(x, 0.0)``, read from its ``node``) is a plain ReLU or a clip to [-1, 1] that TFLite fuses into the op
    before it (its RELU, RELU6, RELU_N1_TO_1)."""
    if not isinstance(layer, layers.Layer):
        name = type(layer).__name__
        if name == "Clip":
            low, high = getattr(layer, "x_min", None), getattr(layer, "x_max", None)
            if isinstance(low, (int, float)) and isinstance(high, (int, float)):
                return _CLIPS.get((float(low), float(high)))
            return None
        if name == "Maximum" and node is not None:
            constants = [a for a in node.arguments.args if not isinstance(a, keras.KerasTensor)]
            return "relu" if len(node.arguments.args) == 2 and constants in ([0], [0.0]) else None
        return _OP_ACTIVATIONS.get(name)
    if isinstance(layer, layers.Activation) and activation_name(layer.activation) == "hard_tanh":
        return "hard_tanh"
    kind = activation_kind(layer)
    return kind if kind in ("relu", "relu6") else None


def _fixed_range(layer):
    """The output range TFLite fixes for this layer's last op (softmax, sigmoid, tanh), or None."""
    facts = facts_for(layer)
    if facts.output_range == "fixed":
        return facts.fixed_range
    if facts.kernels and isinstance(layer, layer_ops.SUPPORTED):  # a conv/dense ending in sigmoid, say
        return _ACTIVATION_RANGES.get(activation_name(getattr(layer, "activation", None)))
    return None


def _shared(op) -> bool:
    return facts_for(op).output_range == "shared"


def _op_as_layer(op, node_shape):
    """The Keras layer that computes what an op node computes, so that it is quantized as that layer is: a
    shared-range op (``ops.concatenate``, ``ops.average_pool``, a bilinear ``ops.image.resize``: one range for inputs
    and output), ``ops.leaky_relu`` (LEAKY_RELU, computed as each kernel set does) and ``ops.silu`` (LOGISTIC on its
    fixed grid, then MUL); None for other ops. ``node_shape``: the shape of the node's first input."""
    name = type(op).__name__
    if name == "LeakyRelu":
        return layers.LeakyReLU(negative_slope=op.negative_slope, name=op.name, dtype="float32")
    if name == "Silu":
        return layers.Activation("silu", name=op.name, dtype="float32")
    if facts_for(op).output_range != "shared":
        return None
    if name in ("Concatenate", "Stack"):
        return layers.Concatenate(axis=op.axis, name=op.name, dtype="float32")
    if name == "AveragePool" and op.data_format == "channels_last":
        pool = {1: layers.AveragePooling1D, 2: layers.AveragePooling2D}.get(len(node_shape) - 2)
        if pool is not None:
            return pool(op.pool_size, op.strides, op.padding, name=op.name, dtype="float32")
        return None
    if name == "Resize" and op.data_format == "channels_last":
        return layers.Resizing(
            *op.size,
            interpolation=op.interpolation,
            crop_to_aspect_ratio=op.crop_to_aspect_ratio,
            pad_to_aspect_ratio=op.pad_to_aspect_ratio,
            fill_mode=op.fill_mode,
            fill_value=op.fill_value,
            name=op.name,
            dtype="float32",
        )
    return None


def _binary_as_merge(op, args, kwargs):
    """``a + b``, ``a - b``, ``a * b`` of two tensors of one rank (Python operators on Keras tensors, ``ops.add``) as
    the Add, Subtract or Multiply layer, quantized (and its integer arithmetic emulated) as that layer; else None."""
    merge = {"Add": layers.Add, "Subtract": layers.Subtract, "Multiply": layers.Multiply}.get(type(op).__name__)
    if merge is None or kwargs or len(args) != 2 or not all(isinstance(a, keras.KerasTensor) for a in args):
        return None
    if len(args[0].shape) != len(args[1].shape) or args[0] is args[1]:
        return None
    return merge(name=op.name, dtype="float32")


def _windowed_average(op) -> bool:
    """An average pooling over a window (not a global mean): one grid for its input and output in TFLite."""
    facts = facts_for(op)
    return facts.output_range == "shared" and facts.channels == "pass" and facts.int8_kernel != "mean"


def _folds_into(op) -> bool:
    """Whether a BatchNorm after ``op`` folds into its quantized kernel."""
    facts = facts_for(op)
    return facts.folds_batchnorm and facts.quantizable and isinstance(op, layer_ops.SUPPORTED)


def _node_fixed_range(node):
    op = node.operation
    return _fixed_range(op) if isinstance(op, layers.Layer) else None


def _inherited_fixed_range(node):
    """For a shared-range layer with one input: the fixed range of the layer that produces it, which TFLite keeps."""
    if len(node.input_tensors) != 1:
        return None
    producer = node.input_tensors[0]._keras_history.operation
    return _fixed_range(producer) if isinstance(producer, layers.Layer) else None


def _channel_affine(layer, shape):
    """(a, b) with ``layer(x) == x·a + b`` per channel (last axis, float64 arrays of length C) for a Rescaling or a
    Normalization over the channel axis (or all axes) of a 4-D input, else None."""
    if len(shape) != 4 or shape[-1] is None:
        return None
    channels = shape[-1]
    if isinstance(layer, layers.Rescaling):
        a, b = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    elif isinstance(layer, layers.Normalization) and getattr(layer, "mean", None) is not None:
        if tuple(getattr(layer, "_keep_axis", ())) not in ((), (3,)):
            return None
        mean = np.asarray(layer.mean, np.float64)
        sd = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.config.epsilon())
        a, b = (sd, mean) if layer.invert else (1.0 / sd, -mean / sd)
    else:
        return None
    try:
        return tuple(np.broadcast_to(v, (1, 1, 1, channels)).reshape(channels) for v in (a, b))
    except ValueError:
        return None


def _affine_as_depthwise(layer, shape):
    """A Rescaling or Normalization as the 1×1 depthwise convolution int8 TFLite can run (per-channel scale as the
    kernel, offset as the bias): a per-channel weight scale holds each factor exactly (its int8 value is ±127), and
    the existing integer kernels simulate it. Not trainable: it is the model's preprocessing. None where the layer is
    not a per-channel affine map of a 4-D tensor."""
    affine = _channel_affine(layer, shape)
    if affine is None:
        return None
    a, b = affine
    dw = layers.DepthwiseConv2D(1, use_bias=True, name=layer.name, trainable=False)
    dw.build(shape)
    dw.set_weights([a.reshape(1, 1, -1, 1).astype(np.float32), b.astype(np.float32)])
    return dw


def _grouped_as_depthwise(conv, shape):
    """A Conv2D with one input channel per group (groups = input channels, as ConvNeXt's 7×7 convolutions) as the
    DepthwiseConv2D it is: int8 TFLite runs that per channel; the grouped CONV_2D the converter would otherwise
    need is left float. Output channel c·m + j of the depthwise form is output channel c·m + j of the grouped one, so
    the kernel (kh, kw, 1, C·m) only changes shape. None for other convolutions."""
    groups = getattr(conv, "groups", 1)
    if (
        type(conv) is not layers.Conv2D
        or groups == 1
        or len(shape) != 4
        or shape[-1] != groups
        or conv.data_format != "channels_last"
    ):
        return None
    kh, kw = conv.kernel_size
    multiplier = conv.filters // groups
    dw = layers.DepthwiseConv2D(
        (kh, kw),
        strides=conv.strides,
        padding=conv.padding,
        depth_multiplier=multiplier,
        dilation_rate=conv.dilation_rate,
        activation=conv.activation,
        use_bias=conv.use_bias,
        name=conv.name,
        trainable=conv.trainable,
    )
    dw.build(shape)
    weights = conv.get_weights()
    weights[0] = weights[0].reshape(kh, kw, groups, multiplier)
    dw.set_weights(weights)
    return dw


def _is_layer_scale(op) -> bool:
    """keras.applications' ConvNeXt LayerScale: x · γ per channel."""
    return type(op).__name__ == "LayerScale" and getattr(op, "gamma", None) is not None and len(op.gamma.shape) == 1


def _channel_affine_depthwise(name, shape, scale, shift, trainable):
    """x·scale (+ shift) per channel of a 4-D tensor as a 1×1 DepthwiseConv2D: int8 TFLite runs it per channel, and
    the factors stay trainable weights (LayerNormalization's γ and β, ConvNeXt's LayerScale)."""
    scale = np.asarray(scale, np.float32)
    dw = layers.DepthwiseConv2D(1, use_bias=shift is not None, name=name, trainable=trainable)
    dw.build(shape)
    weights = [scale.reshape(1, 1, -1, 1)] + ([] if shift is None else [np.asarray(shift, np.float32)])
    dw.set_weights(weights)
    return dw


def _identity_depthwise(bn, shape):
    """For a standalone BatchNormalization over the channels of a 4-D tensor (after an Add or a pooling, as in
    pre-activation ResNets): a 1×1 depthwise convolution with a unit kernel, not trainable, for the BN to fold into.
    int8 TFLite runs it as a DEPTHWISE_CONV_2D (the converter would otherwise leave the BN's MUL and ADD float), and
    the BN keeps training as a folded one does. None where the BN is not of that kind."""
    if len(shape) != 4 or shape[-1] is None or bn.axis not in (-1, 3):
        return None
    dw = layers.DepthwiseConv2D(1, use_bias=False, name=bn.name, trainable=False)
    dw.build(shape)
    dw.set_weights([np.ones((1, 1, shape[-1], 1), np.float32)])
    return dw


class _Quantizer:
    """The transform ``rebuild`` runs over each node."""

    def __init__(self, config: QuantConfig, report: QuantizationReport):
        self.config = config
        self.report = report
        self._left_to_consumer: set[int] = set()  # ids of nodes whose output lies on a consumer's shared range
        # a layer called several times (a shared Dense): one copy of it for all calls, each call a wrapper of its own
        # (its own input, output and bias grids, as the file has them), named apart by ``_suffix``
        self._copies: dict = {}
        self._seen: dict = {}
        self._suffix = ""
        self._inlined_calls = 1  # the calls of the model being inlined (``_transform``), 1 elsewhere
        self._no_implementation: set[int] = set()  # ids of the layers kept float for want of a quantized version

    def _calls_of(self, rb, op) -> int:
        """How many wrappers will hold ``op``'s copy: its calls in this graph, times those of the model it is inlined
        from where that model is called several times."""
        return rb.info.calls(op) * self._inlined_calls

    def _shared_copy(self, op, make):
        """``make()`` (a copy of ``op``), made once for all of ``op``'s calls: a layer called several times, or
        inside a model called several times (inlined at each call), keeps one set of weights."""
        if id(op) not in self._copies:
            self._copies[id(op)] = make()
        return self._copies[id(op)]

    def act_kwargs(self, spec):
        return dict(bits=spec.activation_bits, symmetric=spec.activation_symmetric, ema_decay=self.config.ema_decay)

    def wrapper_kwargs(self, spec, layer):
        return dict(
            weight_bits=spec.weight_bits,
            weight_symmetric=spec.weight_symmetric,
            per_channel=spec.per_channel_for(layer),
            activation_bits=spec.activation_bits,
            activation_symmetric=spec.activation_symmetric,
            ema_decay=self.config.ema_decay,
        )

    def _kernel_kwargs(self, spec, op, own_bn):
        """The wrapper's settings; a standalone BatchNorm's 1×1 depthwise kernel is quantized per tensor under
        ``weight_granularity="auto"``: per-channel scales cost a float32 scale and an int64 zero point per channel
        for the kernel and again for its int32 bias, which made DenseNet121's file 12.6 % larger than the converter's
        (which runs such a BatchNorm as a MUL by a per-tensor int8 constant, and an ADD); per tensor it is 1.6 %
        larger (benchmarks/file_size.py). An override ``{"<bn name>": {"weight_granularity": "per_channel"}}`` keeps
        one scale per channel."""
        kwargs = self.wrapper_kwargs(spec, op)
        if own_bn is not None and spec.weight_granularity == "auto":
            kwargs["per_channel"] = False
        return kwargs

    def _fusable_readers(self, rb, node):
        """The ReLU/ReLU6 layers TFLite fuses into ``node``'s op, and their kind: its only reader, or several readers
        that all apply the same plain ReLU. The converter merges identical ReLUs of one tensor into one and fuses it
        (NASNet's stem feeds five); a simulation that kept them apart would round twice (on the op's own grid, then
        on the ReLU's) where the file rounds once. ``([], None)`` where nothing fuses."""
        if len(node.outputs) != 1 or id(node.outputs[0]) in rb.info.output_ids:
            return [], None
        readers = rb.info.node_consumers(node)
        if not readers:
            return [], None
        kinds = set()
        for reader in readers:
            op = reader.operation
            if isinstance(op, layers.Layer) and not self.config.for_layer(op).quantize:
                return [], None
            kinds.add(_fusable_activation(op, reader))
        if len(kinds) != 1 or None in kinds:
            return [], None
        return readers, kinds.pop()

    def _feeds_shared_range(self, rb, nodes) -> bool:
        """Whether the output of ``nodes`` (one node, or the ReLUs fused into one op, which give one tensor) lies on a
        consumer's shared range instead of a range of its own: its only consumer quantizes the tensor with its shared
        range, or (through range-inheriting layers, with other consumers beside) exactly one Concatenate reads it,
        which TFLite holds to its own grid. A node with a fixed output range keeps it: the consumer adopts that range
        instead."""
        if any(_node_fixed_range(node) is not None for node in nodes):
            return False
        nxt = rb.info.sole_consumer(nodes[0]) if len(nodes) == 1 else None
        if nxt is not None and _shared(nxt.operation) and self._quantized(nxt.operation):
            return True
        return len(self._concats_reached(rb, nodes)) == 1

    def _quantized(self, op) -> bool:
        """Whether quantize_model quantizes this node's operation: a layer the config does not skip, or a Keras op."""
        return not isinstance(op, layers.Layer) or self.config.for_layer(op).quantize

    def _concats_reached(self, rb, nodes) -> set:
        """The Concatenate layers that read the output of ``nodes`` directly or through range-inheriting layers."""
        found, stack, seen = set(), list(nodes), set()
        while stack:
            for consumer in rb.info.node_consumers(stack.pop()):
                op = consumer.operation
                if id(consumer) in seen or not self._quantized(op):
                    continue
                seen.add(id(consumer))
                facts = facts_for(op)
                if facts.channels == "concat" and facts.output_range == "shared":
                    found.add(id(op))
                elif facts.output_range == "inherit":
                    stack.append(consumer)
        return found

    def _pool_inherits(self, rb, node) -> bool:
        """Whether an average pooling keeps its input's grid (TFLite's AVERAGE_POOL_2D has one scale for input and
        output): where the tensor it reads has a grid of its own (its producer feeds other layers too, or is a
        model input or a range-inheriting layer), not one the producer left to this pooling alone to set."""
        if not _windowed_average(node.operation) or len(node.input_tensors) != 1:
            return False
        history = node.input_tensors[0]._keras_history
        producer = history.operation._inbound_nodes[history.node_index]
        return not (id(producer) in self._left_to_consumer and rb.info.sole_consumer(producer) is node)

    def _decide_output(self, rb, nodes) -> bool:
        """quantize_output for the wrapper whose output is that of ``nodes`` (the wrapped node, or the ReLUs fused
        into it); remembers the nodes that leave their output to a consumer."""
        leaves = self._feeds_shared_range(rb, nodes)
        if leaves:
            self._left_to_consumer.update(id(node) for node in nodes)
        return not leaves

    def __call__(self, rb, node, args, kwargs, as_layer=None):
        op = node.operation
        calls = self._seen[id(op)] = self._seen.get(id(op), 0) + 1
        self._suffix = "" if calls == 1 else f"_call{calls}"  # the layers made for a later call of a shared layer
        out = self._transform(rb, node, args, kwargs, as_layer)
        if out is None and id(op) in self._no_implementation:
            return self._float_output_on_grid(rb, node, args, kwargs)
        return out

    def _float_output_on_grid(self, rb, node, args, kwargs):
        """A layer with no quantized implementation (a custom layer with weights, a ``Lambda`` that cannot be
        traced), its float outputs put on a grid of their own for its readers. The converter quantizes what it can of
        such a layer whatever keras-eff does: without the range it folds a layer that scales by a constant into the
        next convolution's fake-quant kernel, where the int8 codes saturate (96 LSB off), or calibrates it from
        representative data. A layer skipped by `QuantConfig` or with settings int8 cannot hold gets no range: the
        file computes it, and what reads it, in float."""
        outputs = rb.keep(node, args, kwargs)
        flat = keras.tree.flatten(outputs)
        placed = [
            (
                ActivationQuantizer(
                    **self.act_kwargs(self.config._default),
                    after_float=True,
                    name=f"{node.operation.name}_output_range{self._suffix}" + (f"_{i}" if len(flat) > 1 else ""),
                )(t)
                if isinstance(t, keras.KerasTensor) and "float" in str(t.dtype)
                else t
            )
            for i, t in enumerate(flat)
        ]
        return keras.tree.pack_sequence_as(outputs, placed)

    def _transform(self, rb, node, args, kwargs, as_layer=None):
        op = as_layer or node.operation
        if isinstance(op, keras.Model):
            if rb.info.calls(op) > 1 and len(args) == 1 and all(v is None for v in kwargs.values()):
                # an encoder applied to two inputs: its layers inlined at each call, each call's wrappers holding the
                # same layer copies (shared weights) on the grids of that call, as the file's copies of them compute
                outer, self._inlined_calls = self._inlined_calls, self._inlined_calls * rb.info.calls(op)
                try:
                    return rb.inline(op, keras.tree.flatten(args[0]))
                finally:
                    self._inlined_calls = outer
            inner = quantize_model(op, self.config, _nested=True, _report=self.report)
            return inner(*args, **kwargs)
        facts = facts_for(op)
        if not isinstance(op, layers.Layer):  # a raw op such as keras.ops.add in the graph
            if type(op).__name__ in activation_steps.OP_CHAINS and args:
                name, params = activation_steps.op_params(op)
                return self._chain(op, self.config._default, args[0], name, params, report=False)
            if facts.output_range == "inherit":  # on its input's grid, as the file computes it
                return op(*args, **kwargs)
            layer = _op_as_layer(op, node.input_tensors[0].shape)
            if layer is not None:  # quantized as that layer (a shared range: one grid for inputs and output)
                if type(op).__name__ == "Stack":  # ops.stack(xs, axis): concatenated along a new axis
                    args = ([ops.expand_dims(t, op.axis) for t in args[0]],)
                return self._transform(rb, node, args[:1], {}, as_layer=layer)
            dense = _matmul_as_dense(op, args, kwargs, node.input_tensors[0].shape)
            if dense is not None:  # a traced layer's x @ w: a Dense, its kernel trainable (``tracing.matmul_kernel``)
                return self._wrap_kernel_layer(rb, node, dense, self.config._default, args[:1], {})
            merge = _binary_as_merge(op, args, kwargs)
            if merge is not None:  # ``a + b`` of two tensors: the Keras layer, whose integer arithmetic is emulated
                return self._transform(rb, node, (list(args),), {}, as_layer=merge)
            bounds = _constant_bounds(op, args, kwargs)
            if bounds is not None:  # MAXIMUM / MINIMUM with a constant: on the input's grid, as in the file
                return _clip_on_input_grid(op.name, *bounds)
            with_constant = self._constant_op(rb, node, op, args, kwargs)
            if with_constant is not None:
                return with_constant
            if type(op).__name__ in _BINARY_OPS:  # a constant operand computes on its int8 grid, as in the file
                args = tuple(
                    a if isinstance(a, keras.KerasTensor) else integer_inference.on_constant_grid(a) for a in args
                )
            out = op(*args, **kwargs)
            if not all("float" in str(t.dtype) for t in keras.tree.flatten(out)):
                return out  # a comparison's booleans, an argmax's indices: not on an int8 grid
            readers, act = ([], None) if facts.fixed_range else self._fusable_readers(rb, node)
            if act:
                out = layers.Activation(act)(out)
                for reader in readers:
                    rb.absorb(reader)
            return ActivationQuantizer(
                **self.act_kwargs(self.config._default),
                fixed_range=facts.fixed_range,
                name=f"{op.name}_output_range{self._suffix}",
            )(out)
        spec = self.config.for_layer(op)
        if not spec.quantize:
            self.report.float_layers.append((op.name, SKIPPED))
            return None
        if facts.output_range == "inherit":
            self.report.inherit_range.append(op.name)
            copy = _in_float32(op)  # (on the grid of its input, which a float16 layer would leave through casts)
            return None if copy is op else copy(*args, **kwargs)
        if isinstance(op, (layers.Rescaling, layers.Normalization)) and len(node.input_tensors) == 1:
            depthwise = _affine_as_depthwise(op, node.input_tensors[0].shape)
            if depthwise is not None:
                return self._wrap_kernel_layer(rb, node, depthwise, spec, args, kwargs)
        if (
            isinstance(op, layers.BatchNormalization)
            and len(node.input_tensors) == 1
            and not self._converter_folds(rb, node)
        ):
            depthwise = _identity_depthwise(op, node.input_tensors[0].shape)
            if depthwise is not None:
                kwargs = {k: v for k, v in kwargs.items() if not (k == "mask" and v is None)}
                return self._wrap_kernel_layer(rb, node, depthwise, spec, args, kwargs, own_bn=node)
        if isinstance(op, layers.MultiHeadAttention):
            reason = attention.supported_reason(op, node)
            if reason:
                self.report.float_layers.append((op.name, f"MultiHeadAttention with {reason}"))
                return None
            shapes = [t.shape for t in node.input_tensors]
            swapped = attention.from_attention(op, self.act_kwargs(spec), spec.weight_bits, shapes)
            query, value = args[0], args[1] if len(args) > 1 else kwargs["value"]
            key = args[2] if len(args) > 2 else kwargs.get("key")
            self.report.quantized.append(op.name)
            return swapped(query, value, key=key) if key is not None else swapped(query, value)
        if isinstance(op, layers.Attention):
            reason = attention.dot_supported_reason(op, node)
            if reason:
                self.report.float_layers.append((op.name, f"Attention with {reason}"))
                return None
            self.report.quantized.append(op.name)
            return attention.QuantizedDotAttention(name=op.name, **self.act_kwargs(spec))(args[0])
        if isinstance(op, layers.LayerNormalization) and len(node.input_tensors) == 1:
            out = self._layer_norm(rb, node, op, spec, args)
            if out is not None:
                return out
        if _is_layer_scale(op) and len(node.input_tensors) == 1 and len(node.input_tensors[0].shape) == 4:
            depthwise = _channel_affine_depthwise(op.name, node.input_tensors[0].shape, op.gamma, None, op.trainable)
            return self._wrap_kernel_layer(rb, node, depthwise, spec, args, kwargs)
        if isinstance(op, layers.Conv2D) and getattr(op, "groups", 1) != 1 and len(node.input_tensors) == 1:
            depthwise = _grouped_as_depthwise(op, node.input_tensors[0].shape)
            if depthwise is not None:
                return self._wrap_kernel_layer(rb, node, depthwise, spec, args, kwargs)
        if isinstance(op, layers.Activation) and activation_name(op.activation) in activation_steps.CHAINS and args:
            return self._chain(op, spec, args[0], activation_name(op.activation), suffix=self._suffix)
        if isinstance(op, layers.ELU) and args:
            return self._chain(op, spec, args[0], "elu", {"alpha": float(op.alpha)}, suffix=self._suffix)
        if facts.kernels and facts.quantizable:
            reason = layer_ops.unsupported_reason(op) if isinstance(op, layer_ops.SUPPORTED) else None
            if reason:
                self.report.float_layers.append((op.name, reason))
                return None
            return self._wrap_kernel_layer(rb, node, op, spec, args, kwargs)
        if isinstance(op, (layers.Add, layers.Multiply)) and len(node.input_tensors) > 2 and args:
            args = (self._binary_steps(op, spec, list(args[0])),) + tuple(args[1:])
        if facts.quantizable:
            shared = facts.output_range == "shared"
            readers, act = (
                ([], None)
                if isinstance(op, layers.Activation) or facts.output_range in ("fixed", "shared")
                else self._fusable_readers(rb, node)
            )
            fixed = _inherited_fixed_range(node) if shared else _fixed_range(op)
            inherits = fixed is None and self._pool_inherits(rb, node)
            wrapper = QuantizeWrapper(
                self._shared_copy(op, lambda: _in_float32(reuse_or_clone(op))),
                name=f"quant_{op.name}{self._suffix}",
                fused_activation=act or "linear",
                quantize_output=self._decide_output(rb, readers or [node]) and not inherits,
                fixed_output_range=fixed,
                **self.wrapper_kwargs(spec, op),
            )
            # a wrapper takes no mask: Keras passes BatchNormalization's mask=None along in its node
            out = wrapper(*args, **{k: v for k, v in kwargs.items() if not (k == "mask" and v is None)})
            if wrapper.layer is not op and op.weights:
                wrapper.layer.set_weights(op.get_weights())
            for reader in readers:
                rb.absorb(reader)
            if readers:
                self.report.fused_activations.append((op.name, act))
            self.report.quantized.append(op.name)
            return out
        # a custom layer with weights called several times is not traced: each call's copies of its weights would
        # train apart (and the converter quantizes a constant several ops read by its own rule: 4 LSB off)
        called_once = not op.variables or self._calls_of(rb, op) == 1
        traced = tracing.trace_layer(op, args, kwargs) if called_once else None
        if traced is not None:  # quantized op by op, as the converter sees it, in this graph
            flat = keras.tree.flatten(args[0])
            outputs = rb.inline(traced.model, flat + traced.operands)
            if _mark_traced(outputs, flat, op.name):
                self.report.traced.append(op.name)
            return outputs
        if id(op) not in self._no_implementation:  # (reported once for a layer called several times)
            self._no_implementation.add(id(op))
            self.report.float_layers.append((op.name, f"{type(op).__name__}{NO_IMPLEMENTATION}"))
        return None

    def _constant_op(self, rb, node, op, args, kwargs):
        """An ADD, SUB or MUL of a tensor and a constant as a `QuantizedConstantOp` (the integer arithmetic of the
        file at inference), a following ReLU fused; None for any other op."""
        kind = _CONSTANT_OPS.get(type(op).__name__)
        split = None if kind is None or kwargs else _tensor_and_constant(args)
        if split is None:
            return None
        tensor, constant, first = split
        # what a traced layer's variables compute (``tracing.ConstantOperand``): copied, and trainable
        operand = constant if isinstance(constant, tracing.ConstantOperand) else None
        learned = operand is not None and operand.trainable
        constant = operand.value() if operand is not None else np.asarray(constant, np.float32)
        if kind == "divide":  # the converter multiplies by the reciprocal, computed in float32
            if first:
                return None
            kind, constant = "multiply", np.float32(1.0) / constant
            operand = None if operand is None else tracing.reciprocal(operand)
        readers, act = self._fusable_readers(rb, node)
        layer = QuantizedConstantOp(
            kind,
            constant,
            first,
            act or "linear",
            learned,
            function=operand.function if learned else None,
            **self.act_kwargs(self.config._default),
            name=op.name,
        )
        if learned:
            layer.start_learning_from(tensor.shape, operand.values())
        for reader in readers:
            rb.absorb(reader)
        return layer(tensor)

    def _chain(self, op, spec, x, name, params=None, report=True, suffix=""):
        """An activation TFLite has no single int8 op for (hard_sigmoid, softplus, mish, ELU ...; a layer, a Keras op,
        or a conv/dense layer's ``activation=``, after it, ``suffix`` naming it apart from that layer) as a
        `QuantizedActivation`: the chain of int8 ops ``activation_steps`` writes, a range on each step (the converter
        otherwise leaves the inner ops in float)."""
        layer = QuantizedActivation(name, **(params or {}), **self.act_kwargs(spec), name=f"{op.name}{suffix}")
        if report:
            self.report.quantized.append(layer.name)
        return layer(x)

    def _binary_steps(self, op, spec, inputs) -> list:
        """An Add or Multiply of n > 2 tensors as Keras computes it and the file holds it, one binary op at a time
        (``(a + b) + c``): each partial result gets a wrapper of its own, with its own int8 range (the converter
        otherwise leaves those ops in float); the layer itself then takes the last partial result and the last
        tensor."""
        partial = inputs[0]
        for i, tensor in enumerate(inputs[1:-1]):
            step = QuantizeWrapper(type(op)(name=f"{op.name}_step{i}", **_FLOAT32), **self.wrapper_kwargs(spec, op))
            partial = step([partial, tensor])
        return [partial, inputs[-1]]

    def _converter_folds(self, rb, bn_node) -> bool:
        """Whether the converter folds this (unfolded) BatchNorm into the conv before it: a BN left after a conv with
        fold_batchnorm=False, the conv's only reader. A BN after a conv that other layers read too (a stem feeding
        both a shortcut and a pre-activation BN) is not folded by anyone: it runs as a depthwise conv instead."""
        history = bn_node.input_tensors[0]._keras_history
        producer = history.operation
        if not _folds_into(producer):
            return False
        producer_node = producer._inbound_nodes[history.node_index]
        return rb.info.sole_consumer(producer_node) is bn_node

    def _layer_norm(self, rb, node, op, spec, args):
        """A LayerNormalization over the last axis as int8 TFLite can run it (``layer_norm.QuantizedNormalization``),
        then γ and β as a 1×1 depthwise convolution (per-channel int8, trainable). None for other forms (RMS scaling,
        several axes), which stay float."""
        shape = node.input_tensors[0].shape
        axes = [op.axis] if isinstance(op.axis, int) else list(op.axis)
        if len(axes) != 1 or axes[0] not in (-1, len(shape) - 1) or op.rms_scaling or len(shape) not in (2, 3, 4):
            return None
        normalized = QuantizedNormalization(op.epsilon, **self.act_kwargs(spec), name=f"{op.name}_normalize")(args[0])
        channels = shape[-1]
        gamma = op.gamma if op.scale else np.ones(channels, np.float32)
        beta = op.beta if op.center else np.zeros(channels, np.float32)
        if len(shape) == 4:
            depthwise = _channel_affine_depthwise(op.name, shape, gamma, beta, op.trainable)
            return self._wrap_kernel_layer(rb, node, depthwise, spec, (normalized,), {})
        inner = tuple(shape[1:-1])  # a sequence's steps, or nothing (a vector)
        as_image = layers.Reshape((inner[0] if inner else 1, 1, channels), name=f"{op.name}_as_image")(normalized)
        depthwise = _channel_affine_depthwise(op.name, as_image.shape, gamma, beta, op.trainable)
        out = self._wrap_kernel_layer(rb, node, depthwise, spec, (as_image,), {})
        return layers.Reshape(inner + (channels,), name=f"{op.name}_as_{'sequence' if inner else 'vector'}")(out)

    def _wrap_kernel_layer(self, rb, node, op, spec, args, kwargs, own_bn=None):
        """Wraps ``op`` (the node's layer, or the depthwise form of a Rescaling, Normalization or, with ``own_bn``,
        of the node's standalone BatchNormalization, folded into it) with a following BN and ReLU fused."""
        builtin = isinstance(op, layer_ops.SUPPORTED)  # else a layer declared through the registry
        own = activation_name(getattr(op, "activation", None)) if builtin else "linear"
        split = own in activation_steps.CHAINS  # no fused form in TFLite: a chain of int8 ops after the op (``_chain``)
        last, bn = node, own_bn
        nxt = rb.info.sole_consumer(node)
        if (
            own_bn is None
            and builtin
            and spec.fold_batchnorm
            and nxt is not None
            and own == "linear"
            and is_foldable_bn(nxt.operation, op)
            and self.config.for_layer(nxt.operation).quantize
            and rb.info.calls(nxt.operation) == 1  # (a BatchNorm called twice keeps its statistics shared)
        ):
            bn, last = nxt, nxt
        readers, act = [], None
        if own in FUSED_ACTIVATIONS and facts_for(op).fuses_activation:
            readers, act = self._fusable_readers(rb, last)
        shared = op is node.operation and own_bn is None  # (a substitute layer is made per call)
        make = lambda: clone_layer(op, **_FLOAT32, **({"activation": "linear"} if split else {}))  # noqa: E731
        inner = self._shared_copy(op, make) if shared else make()
        calls = self._calls_of(rb, op) if shared else 1
        # a wrapper's centroids are its own: the calls of a shared layer would train apart ("sparsity" masks the one
        # kernel they share and is kept)
        preserve = tuple(p for p in spec.preserve if calls == 1 or p != "clusters")
        wrapper = QuantizeWrapper(
            inner,
            name=f"quant_{op.name}{self._suffix}",
            layer_calls=calls,
            batchnorm=None if bn is None else clone_layer(bn.operation, **_FLOAT32),
            fused_activation=act or "linear",
            quantize_output=split or self._decide_output(rb, readers or [last]),
            preserve=preserve,
            n_centroids=preserve_lib.centroid_counts(op, layer_ops.kernel_names(op), preserve),
            **self._kernel_kwargs(spec, op, own_bn),
        )
        out = wrapper(*args, **kwargs)
        wrapper.layer.set_weights(op.get_weights())
        if wrapper.preserve:
            preserve_lib.fill(wrapper)
            self.report.preserved.append((op.name, preserve_lib.describe(wrapper)))
        if bn is not None:
            wrapper.batchnorm.set_weights(bn.operation.get_weights())
            if own_bn is None:
                rb.absorb(bn)
                self.report.folded_batchnorm.append((op.name, bn.operation.name))
        for reader in readers:
            rb.absorb(reader)
        if readers:
            self.report.fused_activations.append((op.name, act))
        self.report.quantized.append(op.name)
        return self._chain(op, spec, out, own, report=False, suffix=f"_{own}{self._suffix}") if split else out


# A quantized layer computes in float32 under any mixed-precision policy: TensorFlow's FakeQuant ops are float32
# only, and a float16 tensor between two int8 grids would reach the int8 file as CAST ops (a float island).
_FLOAT32 = {"dtype": "float32"}


def _matmul_as_dense(op, args, kwargs, shape):
    """``ops.matmul(x, w)`` (``tracing.matmul_kernel``) as a Dense layer without bias, built on ``shape``, holding a
    copy of ``w``, trainable as ``w`` is; else None. The converter sees such a matmul as a FULLY_CONNECTED on a
    constant, quantized by its own rule; as a Dense its kernel is on the wrapper's grid, and the simulation computes
    what the file does."""
    kernel = tracing.matmul_kernel(op, args, kwargs)
    if kernel is None:
        return None
    (w,) = kernel.values()
    dense = layers.Dense(w.shape[1], use_bias=False, name=op.name, trainable=kernel.trainable)
    dense.build(shape)
    dense.set_weights([w])
    return dense


def _is_constant(value) -> bool:
    return isinstance(value, (int, float, np.ndarray, np.number, list, tuple)) and not isinstance(value, bool)


def _constant_bounds(op, args, kwargs):
    """``(tensor, low, high)`` for ``ops.clip(x, low, high)``, ``ops.maximum(x, low)`` or ``ops.minimum(x, high)``
    with constant bounds; else None."""
    name = type(op).__name__
    if kwargs:
        return None
    if name == "Clip" and len(args) == 1 and isinstance(args[0], keras.KerasTensor):
        if _is_constant(op.x_min) and _is_constant(op.x_max):
            return args[0], op.x_min, op.x_max
        return None
    split = _tensor_and_constant(args) if name in ("Maximum", "Minimum") else None
    if split is None:
        return None
    tensor, constant, _ = split
    return (tensor, constant, None) if name == "Maximum" else (tensor, None, constant)


def _clip_on_input_grid(name, x, low, high):
    """A `ClipOnInputGrid` of ``x``; a bound a traced layer's variables compute (``tracing.ConstantOperand``) is
    copied, and trainable."""
    operand = next((b for b in (low, high) if isinstance(b, tracing.ConstantOperand)), None)
    if operand is None:
        return ClipOnInputGrid(low=low, high=high, name=name)(x)
    value, learned = operand.value(), operand.trainable
    low, high = (value, None) if low is operand else (None, value)
    layer = ClipOnInputGrid(low, high, learned, operand.function if learned else None, name=name)
    if learned:
        layer.start_learning_from(x.shape, operand.values())
    return layer(x)


def _tensor_and_constant(args):
    """``(tensor, constant, constant first?)`` for a binary op node of one tensor and one constant; else None."""
    if len(args) != 2:
        return None
    first = not isinstance(args[0], keras.KerasTensor)
    tensor, constant = (args[1], args[0]) if first else args
    if not isinstance(tensor, keras.KerasTensor) or not (
        _is_constant(constant) or isinstance(constant, tracing.ConstantOperand)
    ):
        return None
    return tensor, constant, first


def _mark_traced(outputs, inputs, name) -> bool:
    """Sets ``traced_from`` on the ranges between a traced layer's inputs and outputs, and on a `ClipOnInputGrid`
    there (what ``quantization_report`` reads back); whether there was one."""
    stop = {id(t) for t in inputs}
    stack, seen, marked = list(keras.tree.flatten(outputs)), set(), False
    while stack:
        tensor = stack.pop()
        history = getattr(tensor, "_keras_history", None)
        if id(tensor) in stop or history is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        producer = history.operation
        for q in owned_ranges(producer):  # (the walk stops at the traced layer's inputs: no model input range)
            q.traced_from = name
            marked = True
        if isinstance(producer, ClipOnInputGrid):  # on its input's grid: no range of its own to mark
            producer.traced_from = name
            marked = True
        stack.extend(producer._inbound_nodes[history.node_index].input_tensors)
    return marked


def _copy_names(layer, prefix) -> list:
    """The names the sublayers of ``layer`` get where ``quantize_model`` traces it (``<block>_<sublayer>``, and so on
    down), which a `QuantConfig` may name (``layer_sensitivity`` does)."""
    names = []
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        name = f"{prefix}_{sub.name}"
        names += [name, *_copy_names(sub, name)]
    return names


def _in_float32(layer):
    """``layer`` where it computes in float32, else a float32 copy of it (a stateless layer is shared with the user's
    model and must not be changed); itself where no copy can be made from its config (a ``Lambda``)."""
    if layer.compute_dtype == "float32":
        return layer
    if holds_state(layer):  # a private copy already (reuse_or_clone)
        layer.dtype_policy = "float32"
        return layer
    try:
        return clone_layer(layer, **_FLOAT32)
    except UnsupportedModelError:
        return layer


def _check_weights(model):
    check_finite_weights(model, "quantizing it")


def quantize_model(
    model, config: QuantConfig | dict | None = None, *, preserve=None, _nested=False, _report=None, **kwargs
) -> keras.Model:
    """Makes a copy of a float model ready for quantization-aware training, computing what its int8 TFLite computes.

    Quantizers are placed where int8 TFLite materializes tensors (see the module docstring): kernels fake-quantized,
    a following BatchNorm folded in, a following ReLU/ReLU6 fused, outputs quantized on the ranges TFLite gives them.
    Works on Functional and Sequential models, nested ones included; ``model`` itself is not changed (layers without
    state are shared with it as they are). A ``Lambda``, or a custom layer that no mask reaches (and that computes the
    same whatever its ``training``), without weights or whose weights (or Keras ops on them) are only operands of
    ADD, SUB, MUL, a division or a matmul's kernel (copied, trainable: ``tracing``), is traced on symbolic inputs
    into the Keras ops it computes, and those are quantized as the converter sees them
    (``quantization_report(new_model).traced``).
    Layers that cannot be quantized stay float: they are listed by ``quantization_report(new_model)`` and warned
    about once (each class once, with its layers' names); one with no quantized implementation gets a range on its
    output, while a skipped one is float in the file with what reads it. The activation ranges start unset:
    calibrate (``calibrate``) or train the result before exporting it.

    Args:
        model: A float Functional or Sequential Keras 3 model (built). Not changed. Use ``keras_eff.quantize`` on
            the layers of a subclassed model instead.
        config: A `QuantConfig` or a dict of its fields; default ``QuantConfig()`` (8-bit symmetric weights,
            per-channel where int8 TFLite holds it, 8-bit asymmetric activations, BatchNorm folded).
        preserve: ``"sparsity"``, ``"clusters"`` or both; overrides ``config.preserve``: QAT keeps the zeros of
            pruned kernels and the shared values of clustered ones (strip the pruning and clustering wrappers first).
        _nested: Internal (set for a model nested in the one being quantized); leave it out.
        _report: Internal (the report quantize_model fills as it goes, for its warning); leave it out.
        **kwargs: Fields of `QuantConfig` (``weight_bits=4``, ``skip=["head"]``, ...), each overriding
            ``config``'s.

    Returns:
        A new Keras model holding `QuantizeWrapper` and `ActivationQuantizer` layers; its ranges are unset.

    Raises:
        TypeError: If ``model`` is not a Keras model, ``config`` is neither a `QuantConfig` nor a dict, or a keyword
            is not a field of `QuantConfig`.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
        ValueError: If ``model`` has NaN or infinite weights, is already quantized, still holds pruning or clustering
            wrappers, or ``config`` names layers the model does not have.

    Example:
        ```python
        qat = keras_eff.quantize_model(model)
        keras_eff.calibrate(qat, x_train[:512])
        qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        qat.fit(x_train, y_train, epochs=2, callbacks=[keras_eff.callbacks.FreezeBatchNorm(epoch=1)])
        tflite_bytes = tflite_export.to_tflite(qat)
        ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize_model expects a Keras 3 model, got {type(model).__name__}")
    if preserve is not None:
        kwargs["preserve"] = preserve
    config = resolve_config(QuantConfig, config, kwargs, "quantize_model")
    try:
        functional = functional_of(model)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(
            f"quantize_model cannot rewrite model {model.name!r}: {err}. For a subclassed model, wrap its layers "
            f"with the decorator instead: self.conv = keras_eff.quantize(layers.Conv2D(...), quantize_inputs=True)"
        ) from err
    _check_weights(functional)
    quantized = layers_with(functional, "unset_ranges")  # QuantizeWrapper, ActivationQuantizer
    if quantized:
        raise ValueError(
            f"model {model.name!r} is already quantized (it holds {name_list(quantized)}): "
            f"quantize_model takes a float model. To quantize with other settings, call quantize_model "
            f"on the float model this one was made from; to go on training this one, fit it as it is"
        )
    wrapped = [
        l.name
        for l in functional._flatten_layers(include_self=False, recursive=True)
        if callable(getattr(l, "strip_layer", None))
    ]
    if wrapped:
        raise ValueError(
            f"model {model.name!r} still holds pruning or clustering wrappers ({', '.join(wrapped)}): "
            f"call keras_eff.strip(model) first, then quantize_model(stripped, preserve=...)"
        )
    report = _report if _report is not None else QuantizationReport()
    if not _nested:
        all_layers = list(functional._flatten_layers(include_self=False, recursive=True))
        names = [l.name for l in all_layers]
        names += [n for l in all_layers if not isinstance(l, keras.Model) for n in _copy_names(l, l.name)]
        config.check_names(names, [c.__name__ for l in all_layers for c in type(l).__mro__])
    on_input = None
    if not _nested:
        kw = _Quantizer(config, report).act_kwargs(config._default)
        on_input = lambda t: ActivationQuantizer(**kw, model_input=True, name=f"{t.name}_input_range")(t)  # noqa: E731
    new = rebuild(functional, _Quantizer(config, report), name=model.name, on_input=on_input)
    if not _nested:
        place_ranges(new)
        if any(reason != SKIPPED for _, reason in report.float_layers):  # a skip is the user's own choice
            warnings.warn(report.float_summary(), stacklevel=2)
    return new


def set_integer_kernels(model, kernels) -> None:
    """Chooses whose integer arithmetic a quantized model's inference reproduces, in place.

    Conv, dense, mean, Add and Multiply round differently in each runtime (docs/parity.md). Training and export are
    unaffected; the choice is saved with the model (the ``integer_kernels`` of each `QuantizeWrapper` and of each
    quantized LayerNormalization, which emulates XNNPACK and the built-in kernels and runs its float simulation for
    "micro", and of each quantized MultiHeadAttention), and traced inference functions are dropped so the next
    ``predict`` uses it.

    Args:
        model: A quantized Keras model. Changed in place.
        kernels: ``"xnnpack"`` (LiteRT's default delegate; the default of a new model), ``"builtin"`` (LiteRT's
            built-in kernels: ``TFLiteModel(..., use_xnnpack=False)``), ``"micro"`` (TFLite Micro's reference kernels)
            or None (no integer emulation: the fake-quant graph at inference too).

    Returns:
        None. ``model``'s wrappers are changed in place.

    Raises:
        ValueError: If ``kernels`` is not one of those, or ``model`` holds no `QuantizeWrapper` (quantize it first).
        TypeError: If ``model`` is not a Keras model.

    Example:
        ```python
        keras_eff.quantization.set_integer_kernels(qat, "micro")  # compare with TFLite Micro's outputs
        ```
    """
    integer_inference.check_kernels(kernels)
    if not isinstance(model, keras.Model):
        raise TypeError(f"set_integer_kernels expects a Keras 3 model, got {type(model).__name__}")
    every = list(model._flatten_layers(include_self=False, recursive=True))
    wrappers = [l for l in every if isinstance(l, QuantizeWrapper)]
    if not wrappers:
        raise ValueError(
            f"model {model.name!r} has no QuantizeWrapper layers: quantize it first (keras_eff.quantize_model)"
        )
    for layer in every:
        if isinstance(layer, (QuantizeWrapper, CompositeQuantized)):
            layer.integer_kernels = kernels
    for m in [model] + [l for l in every if isinstance(l, keras.Model)]:
        m.predict_function = m.test_function = None  # traced functions hold the old arithmetic


def quantize(
    layer,
    *,
    weight_bits=8,
    weight_symmetric=True,
    per_channel=None,
    activation_bits=8,
    activation_symmetric=False,
    quantize_inputs=False,
    batchnorm=None,
    fused_activation="linear",
    ema_decay=0.99,
    preserve=(),
) -> QuantizeWrapper:
    """Wraps one layer for quantization-aware training, for any model (subclassed ones too).

    The layer's kernels and output are fake-quantized as int8 TFLite computes them. The layer itself is wrapped, not
    copied. Unlike ``quantize_model``, nothing is decided from the graph around it: fold a BatchNorm or fuse a ReLU by
    passing them, and quantize the inputs where the tensor in front has no range of its own.

    Args:
        layer: An unbuilt or built Keras layer (not a model).
        weight_bits: Bits of the kernels, 2 to 16 (int8 TFLite holds at most 8).
        weight_symmetric: Symmetric kernel ranges (what int8 TFLite stores) or asymmetric ones.
        per_channel: One range per output channel; None: where int8 TFLite holds it (the layer registry's fact).
        activation_bits: Bits of the output range (and input range), 2 to 16 (int8 TFLite needs 8).
        activation_symmetric: Symmetric activation ranges instead of asymmetric ones.
        quantize_inputs: Also fake-quantize what comes in (a model's first layer, or wherever the tensor in front
            has no range).
        batchnorm: A BatchNormalization layer that directly follows ``layer`` (a conv or dense layer), folded in.
        fused_activation: ``"linear"``, ``"relu"`` or ``"relu6"``: a ReLU applied after ``layer`` (and the
            BatchNorm), before the output range.
        ema_decay: Decay of the moving average that trains the activation ranges, in [0, 1).
        preserve: ``"sparsity"``, ``"clusters"`` or both: keep the zeros / shared values the layer's kernels hold
            when the wrapper builds.

    Returns:
        A `QuantizeWrapper` around ``layer``.

    Raises:
        TypeError: If ``layer`` is not a Keras layer, or is a model (use ``quantize_model``).
        ValueError: If a setting is out of range, ``batchnorm`` cannot be folded into ``layer``, or ``layer`` is a
            conv or dense layer int8 TFLite cannot run quantized (channels_first, grouped, causal padding).

    Example:
        ```python
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras_eff.quantize(keras.layers.Conv2D(16, 3), quantize_inputs=True,
                                               fused_activation="relu")
                self.head = keras_eff.quantize(keras.layers.Dense(10))
        ```
    """
    if not isinstance(layer, layers.Layer):
        raise TypeError(f"quantize expects a Keras layer, got {type(layer).__name__}")
    if isinstance(layer, keras.Model):
        raise TypeError("quantize wraps single layers; use keras_eff.quantize_model for a whole model")
    chained = "elu" if isinstance(layer, layers.ELU) else activation_name(getattr(layer, "activation", None))
    if chained in activation_steps.CHAINS:
        warnings.warn(
            f"layer {layer.name!r}: TFLite computes the activation {chained!r} as several ops and a wrapper holds one "
            f"range, after them: those ops would stay float in the int8 file (to_tflite refuses them unless "
            f"allow_float=True). quantize_model writes {chained!r} as a chain of int8 ops; in a subclassed model, "
            f"leave the activation out of the wrapped layer and apply "
            f"keras_eff.quantization.QuantizedActivation({chained!r}) after it",
            UserWarning,
            stacklevel=2,
        )
    return QuantizeWrapper(
        layer,
        batchnorm=batchnorm,
        fused_activation=fused_activation,
        weight_bits=weight_bits,
        weight_symmetric=weight_symmetric,
        per_channel=per_channel,
        activation_bits=activation_bits,
        activation_symmetric=activation_symmetric,
        ema_decay=ema_decay,
        quantize_inputs=quantize_inputs,
        preserve=preserve,
    )
