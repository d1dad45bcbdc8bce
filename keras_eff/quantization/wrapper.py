"""QuantizeWrapper: a Keras layer computed the way int8 TFLite computes it.

For Conv1D/Conv2D, DepthwiseConv2D, SeparableConv2D, Dense and Conv2DTranspose the wrapper fake-quantizes the
kernels (symmetric, per output channel where TFLite can hold it), folds a following BatchNorm into kernel and bias,
applies a fused ReLU/ReLU6, and fake-quantizes the output: the tensor TFLite materializes. An activation TFLite does
not fuse (softmax, sigmoid, tanh, swish, ...) runs after that, with its own output range (TFLite's fixed range where
it has one). A separable convolution also quantizes the tensor between its depthwise and pointwise halves.

Any other layer (Add, Multiply, a standalone BatchNorm, ...) is called as it is and its output fake-quantized; a
Concatenate or an average pooling quantizes its inputs and output with one shared range.

Biases are simulated as TFLite stores them: int32 on the grid s_in·s_w (input scale times each channel's weight
scale). The input scale comes from the quantizer that produced the input, found through the layer's place in the
graph (walking back through layers that inherit their input's range); where none can be found the bias stays float.

BatchNorm folding during QAT (Jacob et al. 2018, with the σ correction): while BN statistics are live, the layer runs
a float pass for the batch statistics, updates the moving statistics, quantizes the kernel folded with the moving
statistics (a stable grid) and rescales the output by σ/σ_B; once frozen (``keras_eff.callbacks.FreezeBatchNorm``)
and at inference it is exactly conv(x, Q(w·γ/σ)) + (β − γ·μ/σ), which is what the int8 file holds.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from ..graph import bn_affine, output_channel_shape
from . import integer_inference as integer
from . import layer_ops
from . import preserve as preserve_lib
from .config import PER_CHANNEL_EXPORTABLE
from .quantizers import FIXED_RANGES, ActivationQuantizer, WeightQuantizer, check_bits

FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
SWISH = ("swish", "silu")  # TFLite runs x·sigmoid(x) as LOGISTIC (fixed 1/256 grid) then MUL
# Layers whose inputs and output share one range (see keras_eff.quantization.model).
SHARED_RANGE = (layers.Concatenate, layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
                layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)
AVERAGE_POOLS = (layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D)


def activation_name(fn) -> str:
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else getattr(fn, "__name__", str(name))


def _fused(name, x):
    if name == "relu":
        return ops.relu(x)
    if name == "relu6":
        return ops.relu6(x)
    return x


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizeWrapper(layers.Wrapper):
    """Quantization simulation of one layer (see the module docstring).

    Args:
        layer: the Keras layer to quantize (a copy made by ``quantize_model``, or yours with ``keras_eff.quantize``).
        batchnorm: a BatchNormalization layer that directly follows ``layer``, folded in.
        fused_activation: "relu" or "relu6" from a following ReLU layer, applied before the output range.
        weight_bits, weight_symmetric, per_channel: the kernels' quantization.
        activation_bits, activation_symmetric, ema_decay: the output range's quantization.
        quantize_inputs: also fake-quantize the input (for layers of subclassed models, or a model's first layer).
        quantize_output: False where the consumer quantizes this output (a Concatenate with a shared range).
        fixed_output_range: (min, max) pinning the output range (softmax, sigmoid and tanh layers).
        preserve: "sparsity", "clusters" or both: keep the kernels' zeros / shared values through QAT
            (``keras_eff.quantization.preserve``); ``n_centroids`` is filled in and saved by the wrapper.
        integer_kernels: whose integer arithmetic inference reproduces: "xnnpack" (LiteRT's default), "builtin"
            (LiteRT without delegates) or "micro" (TFLite Micro); see ``set_integer_kernels``.
    """

    def __init__(self, layer, batchnorm=None, fused_activation="linear", weight_bits=8, weight_symmetric=True,
                 per_channel=None, activation_bits=8, activation_symmetric=False, ema_decay=0.99,
                 quantize_inputs=False, quantize_output=True, fixed_output_range=None, preserve=(),
                 n_centroids=None, integer_kernels="xnnpack", **kwargs):
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        if batchnorm is not None and not isinstance(layer, layer_ops.SUPPORTED):
            raise ValueError(f"batchnorm can only be folded into a conv or dense layer, not {type(layer).__name__}")
        if fused_activation not in FUSED_ACTIVATIONS:
            raise ValueError(f"fused_activation={fused_activation!r} must be one of {FUSED_ACTIVATIONS}")
        self.batchnorm = batchnorm
        self.fused_activation = fused_activation
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.weight_symmetric = bool(weight_symmetric)
        self.per_channel = isinstance(layer, PER_CHANNEL_EXPORTABLE) if per_channel is None else bool(per_channel)
        self.activation_bits = check_bits(activation_bits, "activation_bits")
        self.activation_symmetric = bool(activation_symmetric)
        self.ema_decay = float(ema_decay)
        self.quantize_inputs = bool(quantize_inputs)
        self.quantize_output = bool(quantize_output)
        self.fixed_output_range = None if fixed_output_range is None else tuple(fixed_output_range)
        self.has_kernel = isinstance(layer, layer_ops.SUPPORTED)
        reason = layer_ops.unsupported_reason(layer) if self.has_kernel else None
        if reason:
            raise ValueError(f"layer {layer.name!r} cannot be quantized: {reason}")
        self.preserve = preserve_lib.check_preserve(preserve) if self.has_kernel else ()
        self.n_centroids = None if n_centroids is None else dict(n_centroids)
        self.integer_kernels = integer.check_kernels(integer_kernels)
        self.weight_quantizer = WeightQuantizer(weight_bits, weight_symmetric, self.per_channel)
        own = activation_name(getattr(layer, "activation", None)) if self.has_kernel else "linear"
        self._own_fused = own if own in FUSED_ACTIVATIONS else "linear"
        self._post_activation = None if own in FUSED_ACTIVATIONS else own
        if self._post_activation and fused_activation != "linear":
            raise ValueError(f"layer {layer.name!r} already ends in {own}; a ReLU after it cannot be fused")
        act = dict(bits=activation_bits, symmetric=activation_symmetric, ema_decay=ema_decay)
        prefix = layer.name
        self.input_quantizer = ActivationQuantizer(**act, name=f"{prefix}_input_range") if quantize_inputs else None
        self.output_quantizer = (ActivationQuantizer(**act, fixed_range=self.fixed_output_range,
                                                     name=f"{prefix}_output_range") if quantize_output else None)
        self.between_quantizer = (ActivationQuantizer(**act, name=f"{prefix}_between_range")
                                  if isinstance(layer, layers.SeparableConv2D) else None)
        inner_act = (activation_name(layer.activation) if isinstance(layer, layers.Activation)
                     else self._post_activation)
        self.sigmoid_quantizer = (ActivationQuantizer(**act, fixed_range=FIXED_RANGES["sigmoid"],
                                                      name=f"{prefix}_swish_sigmoid_range")
                                  if inner_act in SWISH else None)
        self.post_quantizer = None
        if self._post_activation:
            self.post_quantizer = ActivationQuantizer(**act, fixed_range=FIXED_RANGES.get(self._post_activation),
                                                      name=f"{prefix}_{self._post_activation}_range")

    # -- structure ---------------------------------------------------------------------------------------------

    @property
    def quantizers(self) -> list:
        """The activation quantizers of this layer, in the order data passes them."""
        return [q for q in (self.input_quantizer, self.between_quantizer, self.output_quantizer,
                            self.sigmoid_quantizer, self.post_quantizer) if q is not None]

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        out_shape = self.layer.compute_output_shape(input_shape)
        if self.batchnorm is not None and not self.batchnorm.built:
            self.batchnorm.build(out_shape)
        for q in self.quantizers:
            q.build()
        self.bn_frozen = self.add_weight(name="bn_frozen", shape=(), initializer="zeros", trainable=False)
        if self.preserve:
            preserve_lib.build(self, layer_ops.kernel_names(self.layer))
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # -- computation -------------------------------------------------------------------------------------------

    def quantize_kernel(self, name, kernel):
        shape = kernel.shape
        k = layer_ops.to_channels_last(self.layer, name, kernel)
        return layer_ops.from_channels_last(self.layer, name, self.weight_quantizer(k), shape)

    def _main_kernel(self):
        return "pointwise_kernel" if isinstance(self.layer, layers.SeparableConv2D) else "kernel"

    def folded_kernels(self):
        """Float kernels and bias as the int8 file holds them: BatchNorm folded in (moving statistics)."""
        layer = self.layer
        kernels = {n: preserve_lib.kernel_value(self, n) for n in layer_ops.kernel_names(layer)}
        bias = layer.bias if layer.use_bias else None
        if self.batchnorm is not None:
            scale, shift = bn_affine(self.batchnorm)
            main = self._main_kernel()
            kernels[main] = kernels[main] * ops.reshape(scale, output_channel_shape(layer, kernels[main].shape))
            bias = shift if bias is None else bias * scale + shift
        return kernels, bias

    def quantized_kernels(self):
        """The fake-quantized kernels (values on the grid) and the bias, as exported. A Conv1D kernel comes back in
        the (1, k, c_in, c_out) form of the 2-D convolution TFLite runs."""
        kernels, bias = self.folded_kernels()
        return {n: self.quantize_kernel(n, k) for n, k in kernels.items()}, bias

    def _between(self, training):
        if self.between_quantizer is None:
            return None
        return lambda t: self.between_quantizer(t, training=training)

    def _linear_with_live_bn(self, x, training):
        """Training with live BN statistics: batch statistics from a float pass, σ-corrected folded kernel.

        The gradient flows through the batch mean and variance, as it does in BatchNormalization's own training:
        with the statistics held constant (a stop-gradient) QAT of a small CNN lost 3.6 points against TF-MOT
        (benchmarks/tfmot.py, 80.5 vs 84.1 %); with it, it matched (84.0 %)."""
        layer, bn = self.layer, self.batchnorm
        raw = {n: preserve_lib.kernel_value(self, n) for n in layer_ops.kernel_names(layer)}
        y_float = layer_ops.linear(layer, x, raw)
        if layer.use_bias:
            y_float = y_float + layer.bias
        axes = list(range(len(y_float.shape) - 1))
        mean, var = ops.moments(y_float, axes=axes)
        m = bn.momentum
        bn.moving_mean.assign(bn.moving_mean * m + ops.stop_gradient(mean) * (1 - m))
        bn.moving_variance.assign(bn.moving_variance * m + ops.stop_gradient(var) * (1 - m))
        qk, _ = self.quantized_kernels()
        y = layer_ops.linear(layer, x, qk, self._between(training))
        gamma = bn.gamma if bn.scale else ops.ones_like(mean)
        beta = bn.beta if bn.center else ops.zeros_like(mean)
        sigma_batch = ops.sqrt(var + bn.epsilon)
        sigma_moving = ops.sqrt(bn.moving_variance + bn.epsilon)
        bias = layer.bias if layer.use_bias else 0.0
        return y * (sigma_moving / sigma_batch) + beta + gamma * (bias - mean) / sigma_batch

    def _linear(self, x, training):
        qk, bias = self.quantized_kernels()
        y = layer_ops.linear(self.layer, x, qk, self._between(training))
        if bias is None:
            return y
        return y + self._int32_bias(bias)

    def _bias_range(self):
        """The range whose scale the file's int32 bias is quantized with: the input's, except after a mean over a 1×1
        window, which the converter drops but whose range still sets the bias scale (the conv then reads the
        producer's grid: measured on MobileNetV3Small, where this put 0.6 % of an SE conv's outputs one LSB off)."""
        if self.between_quantizer is not None:
            return self.between_quantizer
        if self.input_quantizer is not None:
            return self.input_quantizer
        return self._cached_range("_bias_range_lookup", lambda layer: _producer_range(layer, through_dropped=False))

    def _int32_bias(self, bias):
        """The bias on TFLite's int32 grid s_in·s_w, with a straight-through gradient."""
        source = self._bias_range()
        if source is None or source.calibrating:
            return bias
        kernels, _ = self.folded_kernels()
        main = self._main_kernel()
        s_w = self.weight_quantizer.scale(layer_ops.to_channels_last(self.layer, main, kernels[main]))
        step = ops.stop_gradient(source.grid_step() * s_w)
        rounded = integer.round_half_away(bias / step) * step
        return bias + ops.stop_gradient(rounded - bias)

    def _integer_grids(self, training):
        """(input range, output range) where this call runs the integer path (see ``integer_inference``), else None."""
        if not isinstance(self.layer, integer.LINEAR) or not self.weight_quantizer.exportable:
            return None
        source, target = self._input_range(), self._output_range()
        return (source, target) if integer.active(training, source, target) else None

    def _linear_integer(self, x, source, target):
        """conv/dense as XNNPACK computes it: exact int32 accumulator (int8 kernel, int32 bias), fp32 requantization
        half to even. Returns the value on the output grid, before the fused activation (a clamp on that grid)."""
        layer = self.layer
        kernels, bias = self.folded_kernels()
        main = self._main_kernel()
        s_w = self.weight_quantizer.tflite_scale(layer_ops.to_channels_last(layer, main, kernels[main]))
        qk = self.quantize_kernel(main, kernels[main])
        s_in, s_out = source.tflite_scale(), target.tflite_scale()
        w_grid = ops.reshape(s_w, output_channel_shape(layer, qk.shape)) if len(s_w.shape) else s_w
        acc = layer_ops.linear(layer, integer.integers(x, s_in), {main: integer.integers(qk, w_grid)})
        if bias is not None:  # the exported bias as the file's int32 values, added as they are
            s_b = self._bias_range().tflite_scale()
            acc = acc + ops.cast(integer.round_half_away(self._int32_bias(bias) / (s_b * s_w)), "float64")
        if self.integer_kernels != "xnnpack":  # the multiplier in double, as the built-in kernels' Prepare
            real = ops.cast(s_in, "float64") * ops.cast(s_w, "float64") / ops.cast(s_out, "float64")
            return ops.cast(integer.gemmlowp_requantize(acc, real, self.integer_kernels), "float32") * s_out
        return integer.requantize(acc, (s_in * s_w) / s_out) * s_out

    def _input_ranges(self) -> list:
        """The quantizer of each input's grid (None where unknown), for layers with several inputs."""
        nodes = getattr(self, "_inbound_nodes", None)
        if not nodes:
            return [None]
        return [tensor_range(t) for t in nodes[0].input_tensors]

    def _output_range(self):
        """The quantizer of this layer's output grid: its own, the shared range of the layer it feeds, or (an average
        pooling that keeps its input's grid) its input's."""
        if self.output_quantizer is not None:
            return self.output_quantizer
        found = self._cached_range("_output_range_lookup", _consumer_range)
        if found is None and isinstance(self.layer, AVERAGE_POOLS):
            return self._input_range()
        return found

    def _input_range(self):
        """The ActivationQuantizer whose grid this layer's input lies on, or None where it cannot be known."""
        if self.input_quantizer is not None:
            return self.input_quantizer
        return self._cached_range("_input_range_lookup", _producer_range)

    def _cached_range(self, attr: str, find):
        """``find(self)``, remembered once found (None is not remembered: a nested model's input is linked after its
        layers are called). Kept in a closure, so that Keras does not track the other layer's quantizer as a child."""
        cached = getattr(self, attr, None)
        if cached is None:
            found = find(self)
            if found is None:
                return None
            cached = lambda: found  # noqa: E731
            object.__setattr__(self, attr, cached)
        return cached()

    def call(self, inputs, training=None):
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs, training=training)
        grids = self._integer_grids(training) if self.has_kernel else None
        if not self.has_kernel:
            y = self._call_plain(inputs, training)
        elif grids is not None:
            y = self._linear_integer(inputs, *grids)
        elif self.batchnorm is not None and training:
            y = tf.cond(self.bn_frozen > 0, lambda: self._linear(inputs, training),
                        lambda: self._linear_with_live_bn(inputs, training))
        else:
            y = self._linear(inputs, training)
        y = _fused(self.fused_activation, _fused(self._own_fused, y))
        if self.output_quantizer is not None and not isinstance(self.layer, SHARED_RANGE):
            y = self.output_quantizer(y, training=training)
        elif self.output_quantizer is None and not isinstance(self.layer, SHARED_RANGE) and _read_by_others(self):
            # on a Concatenate's grid that other layers read too: put it there here (that range learns in the
            # Concatenate, from what it is handed)
            q = self._output_range()
            if q is not None and not q.calibrating:
                y = q.fake_quantize(y)
        if self._post_activation:
            y = self.post_quantizer(self._activate(self.layer.activation, y, training), training=training)
        return y

    def _activate(self, fn, x, training):
        """An activation as TFLite computes it: swish with its sigmoid on the fixed 1/256 grid."""
        if self.sigmoid_quantizer is not None:
            return x * self.sigmoid_quantizer(ops.sigmoid(x), training=training)
        return fn(x)

    def _call_plain(self, inputs, training):
        # the output grid: this layer's own range, or the shared range of the layer it feeds (a hard-swish before a
        # global average pooling; an average pooling before a global one)
        q = self._output_range()
        if isinstance(self.layer, SHARED_RANGE) and q is not None:
            # one grid for inputs and output: the range is learned from the inputs, which the producers leave
            # unquantized for this layer to quantize
            owner = q is self.output_quantizer
            seen = self.layer(inputs) if isinstance(self.layer, layers.Concatenate) else inputs
            if q.calibrating:
                if owner:
                    q(seen)
                return self.layer(inputs)
            if training and q.learns_by_ema and owner:
                q.update_range(seen)
            source = self._input_range() if isinstance(self.layer, integer.MEANS) else None
            if isinstance(self.layer, integer.MEANS) and integer.active(training, q):
                # the input lies on its producer's grid where that producer has one (it also feeds other layers),
                # else on this shared grid (the producer left it for this layer, see _output_range)
                x = q.fake_quantize(inputs) if source is None or source.calibrating else inputs
                if integer.is_identity_mean(inputs.shape):  # no op in the file: the input's grid carries on
                    return self.layer(x)
                grid = q if source is None or source.calibrating else source
                return q.fake_quantize(integer.mean(self.layer, x, grid.tflite_scale(), q.tflite_scale(),
                                                    q.tflite_zero_point(), self.integer_kernels,
                                                    grid.tflite_zero_point()))
            xs = [q.fake_quantize(x) for x in inputs] if isinstance(inputs, (list, tuple)) else q.fake_quantize(inputs)
            if isinstance(self.layer, layers.AveragePooling2D) and integer.active(training, q):
                return integer.average_pool(self.layer, xs, q.tflite_scale(), q.tflite_zero_point())
            return q.fake_quantize(self.layer(xs))
        if isinstance(self.layer, (layers.Add, layers.Multiply)) and isinstance(inputs, (list, tuple)) \
                and len(inputs) == 2:
            sources = self._input_ranges()
            if integer.active(training, q, *sources):
                fn = integer.add if isinstance(self.layer, layers.Add) else integer.multiply
                return fn(inputs, [r.tflite_scale() for r in sources], q.tflite_scale(), self.integer_kernels)
        if isinstance(self.layer, layers.Activation):
            source = self._input_range()
            if activation_name(self.layer.activation) in integer.HARD_SWISH and integer.active(training, source, q):
                return integer.hard_swish(inputs, source.tflite_scale(), q.tflite_scale())
            return self._activate(self.layer, inputs, training)
        return self.layer(inputs, training=training) if _takes_training(self.layer) else self.layer(inputs)

    # -- export and serialization --------------------------------------------------------------------------------

    def export_problems(self) -> list:
        """What int8 TFLite cannot hold of this layer's settings (empty when exportable)."""
        problems = []
        name = self.layer.name
        if self.has_kernel:
            if self.weight_bits > 8:
                problems.append(f"layer {name!r}: weight_bits={self.weight_bits} (int8 TFLite holds at most 8)")
            if not self.weight_symmetric:
                problems.append(f"layer {name!r}: weight_symmetric=False (int8 TFLite weights are symmetric)")
            if self.per_channel and not isinstance(self.layer, PER_CHANNEL_EXPORTABLE):
                problems.append(f"layer {name!r}: per-channel weights on {type(self.layer).__name__} (the converter "
                                f"cannot hold them; use weight_granularity='per_tensor')")
        return problems  # activation ranges report for themselves (ActivationQuantizer.export_problems)

    def unset_ranges(self) -> list:
        """The names of this layer's activation ranges never set by calibration or training (the
        ``tflite_export.ranges`` protocol: ``to_tflite`` refuses the model while any is left)."""
        return [name for q in self.quantizers for name in q.unset_ranges()]

    def get_config(self):
        config = super().get_config()
        config.update(
            batchnorm=None if self.batchnorm is None else keras.saving.serialize_keras_object(self.batchnorm),
            fused_activation=self.fused_activation, weight_bits=self.weight_bits,
            weight_symmetric=self.weight_symmetric, per_channel=self.per_channel,
            activation_bits=self.activation_bits, activation_symmetric=self.activation_symmetric,
            ema_decay=self.ema_decay, quantize_inputs=self.quantize_inputs, quantize_output=self.quantize_output,
            fixed_output_range=self.fixed_output_range, preserve=list(self.preserve), n_centroids=self.n_centroids,
            integer_kernels=self.integer_kernels)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        bn = config.pop("batchnorm", None)
        bn = None if bn is None else keras.saving.deserialize_keras_object(bn)
        return cls(layer, batchnorm=bn, **config)


def _final_range(layer):
    """The quantizer that puts a layer's output on its grid, or None (no range, or one that only the shared-range
    consumer it feeds reads)."""
    if isinstance(layer, ActivationQuantizer):
        return layer
    if isinstance(layer, QuantizeWrapper):
        own = layer.post_quantizer or layer.output_quantizer
        if own is None and _read_by_others(layer):
            return layer._output_range()
        return own
    return None


def _read_by_others(layer) -> bool:
    """Whether a layer without an output range of its own has readers other than one shared-range consumer (which
    quantizes it): it lies on a Concatenate's grid that others read, or it is an average pooling on its input's."""
    nodes = getattr(layer, "_outbound_nodes", None) or []
    if len(nodes) == 1:
        consumer = nodes[0].operation
        if isinstance(consumer, QuantizeWrapper) and isinstance(consumer.layer, SHARED_RANGE):
            return False
    return bool(nodes) or isinstance(layer.layer, AVERAGE_POOLS)


def _concat_consumers(layer) -> list:
    """The Concatenate wrappers that read ``layer``'s output directly or through range-inheriting layers."""
    from .model import INHERIT_RANGE

    found, stack, seen = [], [layer], set()
    while stack:
        for node in getattr(stack.pop(), "_outbound_nodes", None) or []:
            op = node.operation
            if id(op) in seen:
                continue
            seen.add(id(op))
            if isinstance(op, QuantizeWrapper) and isinstance(op.layer, layers.Concatenate):
                found.append(op)
            elif isinstance(op, INHERIT_RANGE):
                stack.append(op)
    return found


def _producer_range(layer, through_dropped: bool = True):
    """Walks back from ``layer``'s (first) input through range-inheriting layers to the quantizer of its grid."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes or not nodes[0].input_tensors:
        return None
    return tensor_range(nodes[0].input_tensors[0], through_dropped=through_dropped)


def tensor_range(tensor, max_hops: int = 32, through_dropped: bool = True):
    """The quantizer whose grid a symbolic tensor lies on, walking back through range-inheriting layers; across the
    input of a nested model where ``link_nested_inputs`` has linked it to the outer tensor. None where unknown.
    ``through_dropped=False`` stops at a mean over a 1×1 window (no op in the file) and gives its own range."""
    from .model import INHERIT_RANGE

    for _ in range(max_hops):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        producer = history.operation
        found = _final_range(producer)
        before = producer._inbound_nodes[history.node_index].input_tensors if hasattr(producer, "_inbound_nodes") else []
        if (through_dropped and isinstance(producer, QuantizeWrapper) and isinstance(producer.layer, integer.MEANS)
                and before and integer.is_identity_mean(before[0].shape)):
            # a mean over a 1×1 window is no op in the file: its output keeps the input's grid (or, where the
            # producer left its output to this layer's shared range, that range)
            return tensor_range(before[0], max_hops) or found
        if found is not None:
            return found
        outer = getattr(producer, "_keras_eff_outer_range", None)  # the input of a nested model
        if outer is not None:
            return outer()
        if isinstance(producer, keras.Model) and getattr(producer, "outputs", None):
            tensor = producer.outputs[history.tensor_index]  # the output of a nested model: walk on inside it
            continue
        if not isinstance(producer, INHERIT_RANGE):
            return None
        tensor = producer._inbound_nodes[history.node_index].input_tensors[0]
    return None


def link_nested_inputs(inner, outer_tensors):
    """Records, on each input layer of a nested model, the grid of the outer tensor it is called on: layers inside
    then find their input's range (for the int32 bias and integer inference) across the model boundary."""
    outer_tensors = outer_tensors if isinstance(outer_tensors, (list, tuple)) else [outer_tensors]
    for t_in, t_out in zip(inner.inputs, outer_tensors):
        found = tensor_range(t_out)
        if found is not None:
            object.__setattr__(t_in._keras_history.operation, "_keras_eff_outer_range", lambda found=found: found)


def _consumer_range(layer):
    """The shared range of the sole consumer that quantizes this layer's output (a Concatenate, an average pooling),
    or of the one Concatenate that reads it beside other layers (``quantize_model`` left the output to it)."""
    nodes = getattr(layer, "_outbound_nodes", None)
    if not nodes:
        return None
    consumer = nodes[0].operation
    if len(nodes) == 1 and isinstance(consumer, QuantizeWrapper) and isinstance(consumer.layer, SHARED_RANGE):
        return consumer._output_range()  # its own range, or (a chain of shared ranges) the next one's
    concats = _concat_consumers(layer)
    return concats[0]._output_range() if len(concats) == 1 else None


def _takes_training(layer) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
