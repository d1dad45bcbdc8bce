"""QuantizeWrapper: a Keras layer computed the way int8 TFLite computes it.

For Conv1D/Conv2D, DepthwiseConv2D, SeparableConv2D, Dense and Conv2DTranspose the wrapper fake-quantizes the
kernels (symmetric, per output channel where TFLite can hold it), folds a following BatchNorm into kernel and bias,
applies a fused ReLU/ReLU6, and fake-quantizes the output: the tensor TFLite materializes. An activation TFLite does
not fuse (softmax, sigmoid, tanh, swish, ...) runs after that, with its own output range (TFLite's fixed range where
it has one). A separable convolution also quantizes the tensor between its depthwise and pointwise halves.

Any other layer (Add, Multiply, a standalone BatchNorm, ...) is called as it is and its output fake-quantized; a
Concatenate or an average pooling quantizes its inputs and output with one shared range.

A layer declared through the registry (``keras_eff.layers``: a custom layer's ``keras_eff_facts()``) with kernels
is called with its kernels fake-quantized (per tensor, or per channel where its facts say int8 TFLite holds that),
and its output quantized as its facts say.

Biases are simulated as TFLite stores them: int32 on the grid s_in·s_w (input scale times each channel's weight
scale). Which quantizer sets s_in, like every other neighbour's range this layer reads, is decided once by
``quantize_model`` (``placement.place_ranges``) and kept in the wrapper's config; where none is known the bias stays
float.

BatchNorm folding during QAT (Jacob et al. 2018, with the σ correction): while BN statistics are live, the layer runs
a float pass for the batch statistics, updates the moving statistics, quantizes the kernel folded with the moving
statistics (a stable grid) and rescales the output by σ/σ_B; once frozen (``keras_eff.callbacks.FreezeBatchNorm``)
and at inference it is exactly conv(x, Q(w·γ/σ)) + (β − γ·μ/σ), which is what the int8 file holds (docs/qat.md).
"""

from __future__ import annotations

import contextlib
import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from keras.src.saving import serialization_lib

from ..distribute import replicas_in_sync
from ..graph import bn_affine, call_with_values
from ..layers import FIXED_RANGES, LayerFacts, activation_name, channel_shape, facts_for
from . import integer_inference as integer
from . import layer_ops
from . import preserve as preserve_lib
from .export_view import ExportView
from .placement import place_ranges
from .quantizers import ActivationQuantizer, WeightQuantizer, check_bits

FUSED_ACTIVATIONS = ("linear", "relu", "relu6", "hard_tanh")  # TFLite's fused NONE, RELU, RELU6, RELU_N1_TO_1
SWISH = ("swish", "silu")  # TFLite runs x·sigmoid(x) as LOGISTIC (fixed 1/256 grid) then MUL
ROLES = ("input", "between", "output", "sigmoid", "post")  # the activation quantizers a wrapper may own
PLACED = ("input_range", "bias_range", "output_range")  # the neighbours' quantizers ``place`` hands in
# Live BN normalizes by at most this many times the moving σ (see ``_linear_with_live_bn``): σ_B is floored at σ/2.
MAX_LIVE_BN_GAIN = 2.0


def _shared_config(obj):
    """``obj`` serialized so that, inside Keras's saving (an ObjectSharingScope), every config that names it loads
    back as one object: the first serialization registers it, the second comes back marked as shared."""
    serialization_lib.serialize_keras_object(obj)
    return serialization_lib.serialize_keras_object(obj)


def _moments(x, axes):
    """Mean and variance over ``axes`` of the global batch: under ``tf.distribute`` the replicas' sums are all-reduced
    (as Keras's ``BatchNormalization(synchronized=True)``), so every replica folds the same statistics a single device
    computes on the global batch, and the moving statistics stay identical on every replica."""
    if replicas_in_sync() == 1:
        return ops.moments(x, axes=axes)
    ctx = tf.distribute.get_replica_context()
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total, squares, count = ctx.all_reduce(
        tf.distribute.ReduceOp.SUM, [ops.sum(x, axis=axes), ops.sum(ops.square(x), axis=axes), count]
    )
    mean = total / count
    return mean, ops.maximum(squares / count - ops.square(mean), 0.0)


_LEAKY_DEFAULT = 0.2  # keras.activations.leaky_relu's negative_slope


def _leaky_slope(layer):
    """The negative slope of a layer the file runs as one LEAKY_RELU (LeakyReLU; ReLU with a slope and neither a cap
    nor a threshold; Activation("leaky_relu")), else None."""
    if isinstance(layer, layers.LeakyReLU):
        return float(layer.negative_slope)
    if isinstance(layer, layers.ReLU) and float(layer.negative_slope) != 0.0:
        plain = layer.max_value is None and float(layer.threshold) == 0.0
        return float(layer.negative_slope) if plain else None
    if isinstance(layer, layers.Activation) and activation_name(layer.activation) == "leaky_relu":
        return _LEAKY_DEFAULT
    return None


def _load(config):
    return None if config is None else keras.saving.deserialize_keras_object(config)


def _fused(name, x):
    if name == "relu":
        return ops.relu(x)
    if name == "relu6":
        return ops.relu6(x)
    if name == "hard_tanh":
        return ops.clip(x, -1.0, 1.0)
    return x


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizeWrapper(ExportView, layers.Wrapper):
    """A Keras layer computed the way int8 TFLite computes it: kernels, folded BatchNorm and output quantized.

    Made by ``quantize_model`` for each quantized layer, or by ``keras_eff.quantize`` for one layer of any model (see
    the module docstring for what it simulates). Training runs the fake-quant graph with straight-through gradients;
    inference (``training=False``) computes conv, dense, mean, Add and Multiply with the integer arithmetic of
    ``integer_kernels`` where every grid is known. Always computes in float32. Keras-serializable: a saved model loads
    back with its ranges and their placement (in a process that has imported ``keras_eff``).

    Args:
        layer: The Keras layer to quantize (a copy made by ``quantize_model``, or yours with ``keras_eff.quantize``).
        batchnorm: A BatchNormalization layer that directly follows ``layer`` (a conv or dense layer), folded in.
        fused_activation: ``"linear"``, ``"relu"``, ``"relu6"`` or ``"hard_tanh"``: a following ReLU or clip to [-1, 1]
            applied before the output range.
        weight_bits: Bits of the kernels, 2 to 16 (int8 TFLite holds at most 8).
        weight_symmetric: Symmetric kernel ranges (what int8 TFLite stores) or asymmetric ones.
        per_channel: One kernel range per output channel; None: where int8 TFLite holds it (the layer registry's
            fact).
        layer_calls: How many wrappers of the model hold ``layer`` (``quantize_model`` gives one wrapper to each call of
            a layer called several times, all holding the one layer). The converter quantizes a weight that several
            ops read per channel, whatever range a fake-quant gives it (a shared Dense came out 2 LSB off): with
            ``layer_calls > 1`` a layer TFLite otherwise holds per tensor is simulated per channel, by the
            converter's rule, and exported with its float kernel for the converter to quantize.
        activation_bits: Bits of the activation ranges the wrapper owns, 2 to 16 (int8 TFLite needs 8).
        activation_symmetric: Symmetric activation ranges instead of asymmetric ones.
        ema_decay: Decay of the moving average that trains those ranges, in [0, 1).
        quantize_inputs: Also fake-quantize the input (for layers of subclassed models, or a model's first layer).
        quantize_output: False where the consumer quantizes this output (a Concatenate with a shared range).
        fixed_output_range: ``(min, max)`` pinning the output range (softmax, sigmoid and tanh layers); None: the
            registry's fixed range where the layer has one, else learned.
        preserve: ``"sparsity"``, ``"clusters"`` or both: keep the kernels' zeros / shared values through QAT
            (``keras_eff.quantization.preserve``); ignored for a layer without kernels.
        n_centroids: ``{kernel name: number of centroids}`` for ``preserve="clusters"``; None: counted from the
            kernels when the wrapper builds. Saved in the config so a loaded model makes the same variables.
        integer_kernels: Whose integer arithmetic inference reproduces: ``"xnnpack"`` (LiteRT's default),
            ``"builtin"`` (LiteRT without delegates), ``"micro"`` (TFLite Micro) or None (the fake-quant graph at
            inference too); see ``set_integer_kernels``.
        facts: The layer's `LayerFacts` (or their config); None: looked up in the layer registry. Saved in the config.
        quantizers: ``{role: ActivationQuantizer or its config}`` for the roles ``"input"``, ``"between"``,
            ``"output"``, ``"sigmoid"`` and ``"post"``: ranges to reuse instead of new ones (loading uses this);
            None: new ones.
        placement: The neighbours' ranges as a saved config holds them (loading only); otherwise ``quantize_model``
            places them (``place_ranges``).
        **kwargs: Passed to ``keras.layers.Wrapper`` (``name``, default ``"quant_<layer name>"``); ``dtype`` is
            always float32.

    Attributes:
        quantizers: The `ActivationQuantizer` layers the wrapper owns, in the order data passes them.
        weight_quantizer: The `WeightQuantizer` of the kernels.
        bn_frozen: 1.0 once ``FreezeBatchNorm`` froze the folded BatchNorm's statistics, else 0.0 (a variable).

    Raises:
        ValueError: If a setting is out of range, ``batchnorm`` cannot be folded into ``layer``, ``layer`` is a conv
            or dense layer int8 TFLite cannot run quantized (channels_first, grouped, causal padding), ``layer``
            already ends in an activation other than ReLU/ReLU6 and a ReLU is to be fused, or ``quantizers`` names an
            unknown role.

    Example:
        ```python
        wrapper = keras_eff.quantization.QuantizeWrapper(keras.layers.Dense(10), quantize_inputs=True)
        ```
    """

    def __init__(
        self,
        layer,
        batchnorm=None,
        fused_activation="linear",
        weight_bits=8,
        weight_symmetric=True,
        per_channel=None,
        activation_bits=8,
        activation_symmetric=False,
        ema_decay=0.99,
        layer_calls=1,
        quantize_inputs=False,
        quantize_output=True,
        fixed_output_range=None,
        preserve=(),
        n_centroids=None,
        integer_kernels="xnnpack",
        facts=None,
        quantizers=None,
        placement=None,
        **kwargs,
    ):
        kwargs.setdefault("name", f"quant_{layer.name}")
        kwargs["dtype"] = "float32"  # fake quantization in float32 under any mixed-precision policy (distributed.md)
        super().__init__(layer, **kwargs)
        self.facts = (
            facts_for(layer)
            if facts is None
            else (facts if isinstance(facts, LayerFacts) else LayerFacts.from_config(facts))
        )
        self.has_kernel = bool(self.facts.kernels) and self.facts.quantizable
        self.builtin_kernel = isinstance(layer, layer_ops.SUPPORTED)  # else: a declared layer, called as it is
        if batchnorm is not None and not (self.has_kernel and self.facts.folds_batchnorm and self.builtin_kernel):
            raise ValueError(f"batchnorm can only be folded into a conv or dense layer, not {type(layer).__name__}")
        if fused_activation not in FUSED_ACTIVATIONS:
            raise ValueError(f"fused_activation={fused_activation!r} must be one of {FUSED_ACTIVATIONS}")
        self.batchnorm = batchnorm
        self.fused_activation = fused_activation
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.weight_symmetric = bool(weight_symmetric)
        self.layer_calls = int(layer_calls)
        self.per_channel = self.facts.per_channel if per_channel is None else bool(per_channel)
        if self._converter_quantizes_kernel:
            self.per_channel = True
        self.activation_bits = check_bits(activation_bits, "activation_bits")
        self.activation_symmetric = bool(activation_symmetric)
        self.ema_decay = float(ema_decay)
        self.quantize_inputs = bool(quantize_inputs)
        self.quantize_output = bool(quantize_output)
        self.fixed_output_range = None if fixed_output_range is None else tuple(fixed_output_range)
        if self.fixed_output_range is None and self.facts.output_range == "fixed":
            self.fixed_output_range = self.facts.fixed_range
        reason = layer_ops.unsupported_reason(layer) if self.has_kernel and self.builtin_kernel else None
        if reason:
            raise ValueError(f"layer {layer.name!r} cannot be quantized: {reason}")
        self.preserve = preserve_lib.check_preserve(preserve) if self.has_kernel else ()
        self.n_centroids = None if n_centroids is None else dict(n_centroids)
        self.integer_kernels = integer.check_kernels(integer_kernels)
        self.weight_quantizer = WeightQuantizer(weight_bits, weight_symmetric, self.per_channel)
        own = (
            activation_name(getattr(layer, "activation", None)) if self.has_kernel and self.builtin_kernel else "linear"
        )
        self._own_fused = own if own in FUSED_ACTIVATIONS else "linear"
        self._post_activation = None if own in FUSED_ACTIVATIONS else own
        if self._post_activation and fused_activation != "linear":
            raise ValueError(f"layer {layer.name!r} already ends in {own}; a ReLU after it cannot be fused")
        given = dict(quantizers or {})
        unknown = set(given) - set(ROLES)
        if unknown:
            raise ValueError(f"quantizers: unknown roles {sorted(unknown)}; a wrapper owns {ROLES}")
        given = {role: q if isinstance(q, ActivationQuantizer) or q is None else _load(q) for role, q in given.items()}
        act = dict(bits=activation_bits, symmetric=activation_symmetric, ema_decay=ema_decay)
        prefix = layer.name

        def make(role, wanted, **extra):
            if not wanted:
                return None
            if role in given and given[role] is not None:
                return given[role]
            return ActivationQuantizer(
                **act,
                **extra,
                name=f"{prefix}_{role}_range" if role != "post" else f"{prefix}_{self._post_activation}_range",
            )

        self.input_quantizer = make("input", quantize_inputs)
        self.output_quantizer = make("output", quantize_output, fixed_range=self.fixed_output_range)
        # the tensor between a separable conv's halves; the sum inside an Average (ADD, then MUL by 1/n in the file)
        self.between_quantizer = make("between", isinstance(layer, (layers.SeparableConv2D, layers.Average)))
        inner_act = activation_name(layer.activation) if isinstance(layer, layers.Activation) else self._post_activation
        if inner_act in SWISH and "sigmoid" not in given:
            self.sigmoid_quantizer = ActivationQuantizer(
                **act, fixed_range=FIXED_RANGES["sigmoid"], name=f"{prefix}_swish_sigmoid_range"
            )
        else:
            self.sigmoid_quantizer = make("sigmoid", inner_act in SWISH)
        self.post_quantizer = make(
            "post", bool(self._post_activation), fixed_range=FIXED_RANGES.get(self._post_activation)
        )
        self.place(**_placement_from_config(placement))

    def place(self, input_range=None, bias_range=None, output_range=None, input_ranges=(), onto_output_grid=False):
        """Hands the wrapper the quantizers of the grids it reads besides its own; ``place_ranges`` calls it.

        Kept as references, not as sub-layers: the layer that owns a range trains and saves it. The references are
        saved in the wrapper's config. Call it yourself only when rewiring a quantized graph by hand.

        Args:
            input_range: The `ActivationQuantizer` of the input's grid, or None where not known.
            bias_range: The quantizer whose scale the int32 bias is quantized with, where it is not the input's.
            output_range: The quantizer of the output's grid where another layer owns it (the shared range of a
                Concatenate or average pooling this layer feeds).
            input_ranges: The quantizers of each input's grid (Add, Multiply).
            onto_output_grid: Whether this layer puts its output on ``output_range``'s grid itself.

        Returns:
            None.
        """
        for name, q in (("input_range", input_range), ("bias_range", bias_range), ("output_range", output_range)):
            object.__setattr__(self, f"_{name}", q)
        object.__setattr__(self, "_input_ranges", list(input_ranges or ()))
        self.onto_output_grid = bool(onto_output_grid)

    @classmethod
    def after_rebuild(cls, model):
        """Places the ranges of a rewritten graph again (``keras_eff.graph``'s rebuild protocol).

        Wrappers copied from their configs leave their references to other layers' ranges behind; ``rebuild`` calls
        this on the new model.

        Args:
            model: The model ``keras_eff.graph.rebuild`` just built. Its wrappers are changed in place.

        Returns:
            None.
        """
        place_ranges(model)

    # -- structure ---------------------------------------------------------------------------------------------

    @property
    def quantizers(self) -> list:
        """The activation quantizers of this layer, in the order data passes them."""
        return [
            q
            for q in (
                self.input_quantizer,
                self.between_quantizer,
                self.output_quantizer,
                self.sigmoid_quantizer,
                self.post_quantizer,
            )
            if q is not None
        ]

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.batchnorm is not None and not self.batchnorm.built:
            self.batchnorm.build(self.layer.compute_output_shape(input_shape))
        for q in self.quantizers:
            if not q.built:  # (a loaded model's come built from their config)
                q.build()
        self.bn_frozen = self.add_weight(
            name="bn_frozen",
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="float32",
            aggregation="only_first_replica",
        )
        if self.preserve:
            preserve_lib.build(self, self._kernel_names())
        self.built = True

    def compute_output_shape(self, input_shape):
        try:
            return self.layer.compute_output_shape(input_shape)
        except NotImplementedError:  # a custom layer without it: Keras traces the layer instead
            spec = keras.tree.map_shape_structure(lambda shape: keras.KerasTensor(shape), input_shape)
            return keras.tree.map_structure(lambda t: t.shape, self.layer.compute_output_spec(spec))

    # -- computation -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def export_view(self):
        """The export protocol (`ExportView`), with a kernel held as centroids gathered by indices (``preserve=
        "clusters"``) computed once, before the trace, and handed to it as a variable of its own: the converter folds
        a gather no larger than its constant-folding limit only, and VGG16's 4096 × 4096 fc2 (16.8 M weights) was
        left a FakeQuant on a gather that no TFLite op computes ("neither a custom op nor a flex op"). A variable,
        not a constant: the converter freezes variables itself, while a constant travels in the traced graph's
        protobuf (VGG16's clustered export took 67 s that way, 9× the unclustered one).

        Yields:
            None.
        """
        frozen = {
            name: tf.Variable(preserve_lib.kernel_value(self, name), trainable=False, name=f"{name}_clustered")
            for name, state in getattr(self, "preserved", {}).items()
            if "centroids" in state
        }
        # set past Keras's and TensorFlow's attribute tracking: an export's variables are not the layer's weights
        object.__setattr__(self, "_frozen_kernels", frozen)
        try:
            with super().export_view():
                yield
        finally:
            object.__setattr__(self, "_frozen_kernels", {})

    @property
    def _converter_quantizes_kernel(self) -> bool:
        """A kernel TFLite holds per tensor, read by several ops of the file (``layer_calls``): the converter
        quantizes it per channel by its own rule (symmetric, max |w| / 127), ignoring a fake-quant."""
        return self.layer_calls > 1 and self.has_kernel and self.builtin_kernel and not self.facts.per_channel

    def quantize_kernel(self, name, kernel):
        """Fake-quantizes one kernel of the wrapped layer with the wrapper's `WeightQuantizer`.

        Args:
            name: The kernel's attribute name on the layer (``"kernel"``, ``"depthwise_kernel"``, ...), which says
                where its output channel axis is.
            kernel: The kernel's value (folded with the BatchNorm, say), in the layer's own layout.

        Returns:
            The kernel on its grid, in the layer's layout.
        """
        if self._export_view and self._converter_quantizes_kernel:
            return kernel  # (a per-channel fake-quant of this kernel does not convert: the converter quantizes it)
        shape = kernel.shape
        k = layer_ops.to_channels_last(self.layer, name, kernel)
        return layer_ops.from_channels_last(self.layer, name, self.weight_quantizer(k), shape)

    def _main_kernel(self):
        return self.facts.main_kernel

    def _kernel_names(self):
        return tuple(self.facts.kernels)

    def folded_kernels(self):
        """Computes the float kernels and bias as the int8 file holds them, before quantization.

        A folded BatchNorm is folded in with its moving statistics; preserved zeros and clusters are applied.

        Returns:
            ``(kernels, bias)``: ``{kernel name: tensor}`` and the bias tensor (None for a layer without bias and
            without a folded BatchNorm).
        """
        layer = self.layer
        kernels = {n: preserve_lib.kernel_value(self, n) for n in self._kernel_names()}
        bias = layer.bias if layer.use_bias else None
        if self.batchnorm is not None:
            scale, shift = bn_affine(self.batchnorm)
            main = self._main_kernel()
            kernels[main] = kernels[main] * ops.reshape(scale, channel_shape(layer, main, kernels[main].shape))
            bias = shift if bias is None else bias * scale + shift
        return kernels, bias

    def quantized_kernels(self):
        """Computes the fake-quantized kernels (values on the grid) and the float bias, as exported.

        Returns:
            ``(kernels, bias)`` as ``folded_kernels`` returns them, the kernels on their grids. A Conv1D kernel comes
            back in the ``(1, k, c_in, c_out)`` form of the 2-D convolution TFLite runs.
        """
        kernels, bias = self.folded_kernels()
        return {n: self.quantize_kernel(n, k) for n, k in kernels.items()}, bias

    def _between(self, training):
        if self.between_quantizer is None:
            return None
        return lambda t: self.between_quantizer(t, training=training)

    def _linear_with_live_bn(self, x, training):
        """Training with live BN statistics: batch statistics from a float pass, σ-corrected folded kernel.

        The gradient flows through the batch mean and variance, as it does in BatchNormalization's own training
        (with the statistics held constant, QAT trailed TF-MOT's: docs/tfmot.md).

        σ_B is floored at σ/MAX_LIVE_BN_GAIN (σ from the moving variance, which calibration and the int8 file use).
        A freshly initialised model (weights=None: moving variance 1) is calibrated in inference mode on activations
        that shrink from layer to layer, so its ranges are far narrower than the batch-normalized activations of a
        live-BN step. Clipped at those ranges, each BN's input keeps their small scale, and BN, being
        scale-invariant, multiplies the gradient by γ/σ_B at every such layer: one SGD step can then blow the kernels
        up. With the floor the training activations stay within 2× of the scale the ranges were calibrated on; the
        moving variance still follows the batches, so the floor lets go as they converge. Trained models hardly
        reach it, and where they do not this is BatchNormalization's training computation exactly. The
        measurements behind the floor: docs/qat.md."""
        layer, bn = self.layer, self.batchnorm
        raw = {n: preserve_lib.kernel_value(self, n) for n in self._kernel_names()}
        y_float = layer_ops.linear(layer, x, raw)
        if layer.use_bias:
            y_float = y_float + layer.bias
        axes = list(range(len(y_float.shape) - 1))
        mean, var = _moments(y_float, axes)
        m = bn.momentum
        bn.moving_mean.assign(bn.moving_mean * m + ops.stop_gradient(mean) * (1 - m))
        bn.moving_variance.assign(bn.moving_variance * m + ops.stop_gradient(var) * (1 - m))
        qk, _ = self.quantized_kernels()
        y = layer_ops.linear(layer, x, qk, self._between(training))
        gamma = bn.gamma if bn.scale else ops.ones_like(mean)
        beta = bn.beta if bn.center else ops.zeros_like(mean)
        sigma_moving = ops.sqrt(bn.moving_variance + bn.epsilon)
        sigma_batch = ops.maximum(ops.sqrt(var + bn.epsilon), sigma_moving / MAX_LIVE_BN_GAIN)
        bias = layer.bias if layer.use_bias else 0.0
        return y * (sigma_moving / sigma_batch) + beta + gamma * (bias - mean) / sigma_batch

    def _linear_bn_training(self, x, training):
        """The live or frozen BatchNorm branch of a training call, chosen when the step is traced, from the flag's
        value then. A ``tf.cond`` would put both branches and their gradients in every training graph (on
        MobileNetV2 it made the first QAT step 7× slower than float's, +750 MiB), and under ``tf.distribute`` the
        live branch all-reduces its batch statistics, which cannot sit inside a ``tf.cond`` (TensorFlow's
        ``merge_call`` limit). ``FreezeBatchNorm`` retraces ``fit``'s step when it sets the flag; a step traced for
        the other value fails loudly instead of training the wrong branch."""
        with tf.init_scope():
            frozen = float(keras.ops.convert_to_numpy(self.bn_frozen)) > 0
        check = tf.debugging.assert_equal(
            self.bn_frozen > 0,
            frozen,
            message=f"layer {self.name!r}: bn_frozen changed after this training step was traced under tf.distribute; "
            f"retrace it (model.make_train_function(force=True)), as keras_eff.callbacks.FreezeBatchNorm does",
        )
        with tf.control_dependencies([check]):
            x = tf.identity(x)
        return self._linear(x, training) if frozen else self._linear_with_live_bn(x, training)

    def _linear(self, x, training):
        qk, bias = self.quantized_kernels()
        y = layer_ops.linear(self.layer, x, qk, self._between(training))
        if bias is None:
            return y
        return y + self._int32_bias(bias)

    def _bias_source(self):
        """The range whose scale the file's int32 bias is quantized with: the input's, except after a mean over a 1×1
        window, which the converter drops but whose range still sets the bias scale (the conv then reads the
        producer's grid; docs/parity.md)."""
        return self.between_quantizer or self.input_quantizer or self._bias_range

    def _int32_bias(self, bias):
        """The bias on TFLite's int32 grid s_in·s_w, with a straight-through gradient."""
        source = self._bias_source()
        if source is None or source.calibrating:
            return bias
        kernels, _ = self.folded_kernels()
        main = self._main_kernel()
        s_w = self.weight_quantizer.scale(layer_ops.to_channels_last(self.layer, main, kernels[main]))
        step = ops.stop_gradient(source.grid_step() * s_w)
        rounded = integer.round_half_away(bias / step) * step
        return bias + ops.stop_gradient(rounded - bias)

    def _integer(self, training, *quantizers) -> bool:
        """Whether this call computes with integers (``integer_inference``): inference with integer kernels chosen,
        not traced for export, every grid known, set and 8-bit."""
        if training or self._export_view or self.integer_kernels is None:
            return False
        return integer.grids_known(*quantizers)

    def _integer_grids(self, training):
        """(input range, output range) where this call runs the integer path (see ``integer_inference``), else None."""
        if self.facts.int8_kernel != "linear" or not self.builtin_kernel or not self.weight_quantizer.exportable:
            return None
        source, target = self._input_grid(), self._output_grid()
        return (source, target) if self._integer(training, source, target) else None

    def _linear_integer(self, x, source, target):
        """conv/dense as XNNPACK computes it: exact int32 accumulator (int8 kernel, int32 bias), fp32 requantization
        half to even. A separable convolution runs as the file's two ops: its depthwise half (no bias) requantized
        onto the grid between the halves, clamped to int8, then the pointwise half. Returns the value on the output
        grid, before the fused activation (a clamp on that grid)."""
        layer = self.layer
        kernels, bias = self.folded_kernels()
        codes, s_w = {}, {}
        for name, kernel in kernels.items():
            s_w[name] = self.weight_quantizer.tflite_scale(layer_ops.to_channels_last(layer, name, kernel))
            q = self.quantize_kernel(name, kernel)
            grid = ops.reshape(s_w[name], channel_shape(layer, name, q.shape)) if len(s_w[name].shape) else s_w[name]
            codes[name] = integer.integers(q, grid)
        s_in, s_out = source.tflite_scale(), target.tflite_scale()
        between, s_acc = None, s_in
        if self.between_quantizer is not None:
            mid = self.between_quantizer
            s_acc, z_mid = mid.tflite_scale(), mid.tflite_zero_point()
            s_dw = s_w["depthwise_kernel"]

            def between(acc):
                q = self._requantize(acc, s_in, s_dw, s_acc)
                return ops.cast(ops.clip(q, -128.0 - z_mid, 127.0 - z_mid), "float64")

        main = self._main_kernel()
        acc = layer_ops.linear(layer, integer.integers(x, s_in), codes, between)
        if bias is not None:  # the exported bias as the file's int32 values, added as they are
            s_b = self._bias_source().tflite_scale()
            acc = acc + ops.cast(integer.round_half_away(self._int32_bias(bias) / (s_b * s_w[main])), "float64")
        return self._requantize(acc, s_acc, s_w[main], s_out) * s_out

    def _requantize(self, acc, s_in, s_w, s_out):
        return integer.requantize_linear(acc, s_in, s_w, s_out, self.integer_kernels)

    def _output_grid(self):
        """The quantizer of this layer's output grid: its own, or the one ``place`` handed in (the shared range of
        the layer it feeds; an average pooling's input grid)."""
        return self.output_quantizer or self._output_range

    def _input_grid(self):
        """The quantizer whose grid this layer's input lies on, or None where it is not known."""
        return self.input_quantizer or self._input_range

    def call(self, inputs, training=None):
        shape = getattr(inputs, "shape", None)
        if (
            self.builtin_kernel
            and isinstance(self.layer, layers.Dense)
            and shape is not None
            and len(shape) > 2
            and None not in shape[1:]
        ):
            # a Dense on a sequence or an image: one 2-D FULLY_CONNECTED between reshapes, its bias and output range
            # on the 2-D result (the tensordot Keras traces otherwise leaves the converter a float matmul)
            y = self._call_core(ops.reshape(inputs, (-1, shape[-1])), training)
            return self._call_post(ops.reshape(y, (-1,) + tuple(shape[1:-1]) + (y.shape[-1],)), training)
        return self._call_post(self._call_core(inputs, training), training)

    def _call_post(self, y, training):
        """The activation TFLite does not fuse (softmax, sigmoid, gelu, ...) on its own grid."""
        if self._post_activation == "softmax":
            exact = self._softmax_integer(y, self._output_grid(), self.post_quantizer, training)
            if exact is not None:
                return exact
        if self._post_activation == "leaky_relu" and self._integer(
            training, self.output_quantizer, self.post_quantizer
        ):
            return self._leaky_relu_integer(y, _LEAKY_DEFAULT, self.output_quantizer, self.post_quantizer)
        if self._post_activation:
            y = self.post_quantizer(self._activate(self.layer.activation, y, training), training=training)
        return y

    def _leaky_relu_integer(self, x, slope, source, target):
        """LEAKY_RELU from ``source``'s grid onto ``target``'s as the chosen kernels compute it."""
        return integer.leaky_relu(
            x,
            slope,
            source.tflite_scale(),
            source.tflite_zero_point(),
            target.tflite_scale(),
            target.tflite_zero_point(),
            self.integer_kernels,
        )

    def _bilinear_size(self, x):
        """The output (height, width) of a plain bilinear resize (Resizing, UpSampling2D), else None."""
        layer = self.layer
        if getattr(layer, "interpolation", None) != "bilinear" or len(x.shape) != 4:
            return None
        if isinstance(layer, layers.Resizing) and not (layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio):
            return layer.height, layer.width
        if isinstance(layer, layers.UpSampling2D) and layer.data_format == "channels_last":
            return x.shape[1] * layer.size[0], x.shape[2] * layer.size[1]
        return None

    def _softmax_integer(self, x, source, target, training):
        """A softmax over the last axis as LiteRT's int8 SOFTMAX computes it (``integer_inference.softmax``), where
        this call runs the integer path on LiteRT's kernels; else None (TFLite Micro's kernel is another, and the
        float softmax on the fixed grid stands for it)."""
        if self.integer_kernels not in integer.LITERT_KERNELS or not self._integer(training, source, target):
            return None
        return target.fake_quantize(integer.softmax(x, source.tflite_scale(), target.tflite_scale()))

    def _call_core(self, inputs, training):
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs, training=training)
        grids = self._integer_grids(training) if self.has_kernel else None
        if not self.has_kernel:
            y = self._call_plain(inputs, training)
        elif not self.builtin_kernel:
            y = self._call_declared(inputs, training)
        elif grids is not None:
            y = self._linear_integer(inputs, *grids)
        elif self.batchnorm is not None and training:
            y = self._linear_bn_training(inputs, training)
        else:
            y = self._linear(inputs, training)
        y = _fused(self.fused_activation, _fused(self._own_fused, y))
        shared = self.facts.output_range == "shared"
        if self.output_quantizer is not None and not shared:
            y = self.output_quantizer(y, training=training)
        elif self.onto_output_grid:
            # on a Concatenate's grid that other layers read too: put it there here (that range learns in the
            # Concatenate, from what it is handed)
            q = self._output_range
            if q is not None and not q.calibrating:
                y = q.fake_quantize(y, training=training)
        return y

    def _activate(self, fn, x, training):
        """An activation as TFLite computes it: swish with its sigmoid on the fixed 1/256 grid."""
        if self.sigmoid_quantizer is not None:
            return x * self.sigmoid_quantizer(ops.sigmoid(x), training=training)
        return fn(x)

    def _call_declared(self, inputs, training):
        """A layer declared through the registry with kernels: called with them fake-quantized."""
        mapping = []
        for name in self._kernel_names():
            variable = getattr(self.layer, name)
            mapping.append((variable, self.quantize_kernel(name, preserve_lib.kernel_value(self, name))))
        kwargs = {"training": training} if _takes_training(self.layer) else {}
        return call_with_values(self, self.layer, inputs, mapping, **kwargs)

    def _call_plain(self, inputs, training):
        # the output grid: this layer's own range, or the shared range of the layer it feeds (a hard-swish before a
        # global average pooling; an average pooling before a global one)
        q = self._output_grid()
        facts = self.facts
        if facts.output_range == "shared" and q is not None:
            # one grid for inputs and output: the range is learned from the inputs, which the producers leave
            # unquantized for this layer to quantize
            owner = q is self.output_quantizer
            seen = self.layer(inputs) if facts.channels == "concat" else inputs
            if q.calibrating:
                if owner:
                    q(seen)
                return self.layer(inputs)
            if training and q.learns_by_ema and owner:
                q.update_range(seen)
            mean = facts.int8_kernel == "mean"
            source = self._input_grid() if mean else None
            if mean and self._integer(training, q):
                # the input lies on its producer's grid where that producer has one (it also feeds other layers),
                # else on this shared grid (the producer left it for this layer, see _output_range)
                x = q.fake_quantize(inputs) if source is None or source.calibrating else inputs
                if integer.is_identity_mean(inputs.shape):  # no op in the file: the input's grid carries on
                    return self.layer(x)
                grid = q if source is None or source.calibrating else source
                return q.fake_quantize(
                    integer.mean(
                        self.layer,
                        x,
                        grid.tflite_scale(),
                        q.tflite_scale(),
                        q.tflite_zero_point(),
                        self.integer_kernels,
                        grid.tflite_zero_point(),
                    )
                )
            if mean and source is not None and source is not q and not integer.is_identity_mean(inputs.shape):
                # the input lies on its producer's own grid (the producer feeds other layers too): MEAN reads it
                # there and writes onto this grid. Quantizing the input again on this range, which drifts apart
                # from the producer's in training, put a float island in the file. (A mean over a 1×1 window keeps
                # that second fake-quant: the converter drops the mean but quantizes the next bias with its scale.)
                return q.fake_quantize(self.layer(inputs), training=training)
            xs = (
                [q.fake_quantize(x, training=training) for x in inputs]
                if isinstance(inputs, (list, tuple))
                else q.fake_quantize(inputs, training=training)
            )
            if facts.int8_kernel == "average_pool" and self._integer(training, q):
                return integer.average_pool(self.layer, xs, q.tflite_scale(), q.tflite_zero_point())
            size = self._bilinear_size(xs)
            if size is not None and self._integer(training, q):
                xnnpack = self.integer_kernels == "xnnpack"  # else TFLite's reference kernel: built-in, Micro
                resize = integer.resize_bilinear if xnnpack else integer.resize_bilinear_reference
                return resize(xs, size, q.tflite_scale(), q.tflite_zero_point())
            return q.fake_quantize(self.layer(xs), training=training)
        binary = ("add", "subtract", "multiply")
        if facts.int8_kernel in binary and isinstance(inputs, (list, tuple)) and len(inputs) == 2:
            sources = self._input_ranges
            if len(sources) == 2 and self._integer(training, q, *sources):
                scales, kernels = [r.tflite_scale() for r in sources], self.integer_kernels
                if facts.int8_kernel == "multiply":
                    return integer.multiply(inputs, scales, q.tflite_scale(), kernels)
                if facts.int8_kernel == "subtract":  # ADD with the second multiplier negated; LiteRT's int8 SUB is
                    inputs = [inputs[0], -inputs[1]]  # its reference kernel (ties away from zero), built-in too
                    kernels = "micro" if kernels == "builtin" else kernels
                return integer.add(inputs, scales, q.tflite_scale(), kernels)
        if isinstance(self.layer, layers.Average) and isinstance(inputs, (list, tuple)):
            total = inputs[0]
            for x in inputs[1:]:
                total = ops.add(total, x)
            return self.between_quantizer(total, training=training) / len(inputs)
        slope = _leaky_slope(self.layer)
        if slope is not None:
            source = self._input_grid()
            if self._integer(training, source, q):
                return self._leaky_relu_integer(inputs, slope, source, q)
        if isinstance(self.layer, layers.Activation):
            source = self._input_grid()
            if facts.int8_kernel == "hard_swish" and self._integer(training, source, q):
                return integer.hard_swish(inputs, source.tflite_scale(), q.tflite_scale())
            if activation_name(self.layer.activation) == "softmax":
                exact = self._softmax_integer(inputs, source, q, training)
                if exact is not None:
                    return exact
            return self._activate(self.layer, inputs, training)
        if isinstance(self.layer, layers.Softmax) and tuple(np.atleast_1d(self.layer.axis)) in (
            (-1,),
            (len(inputs.shape) - 1,),
        ):
            exact = self._softmax_integer(inputs, self._input_grid(), q, training)
            if exact is not None:
                return exact
        return self.layer(inputs, training=training) if _takes_training(self.layer) else self.layer(inputs)

    # -- export and serialization --------------------------------------------------------------------------------

    def export_problems(self) -> list:
        """Says what int8 TFLite cannot hold of this layer's kernel settings (the export check's protocol).

        Activation ranges report for themselves (``ActivationQuantizer.export_problems``).

        Returns:
            A list of messages naming the layer and the setting (more than 8 weight bits, asymmetric weights,
            per-channel weights where the converter cannot hold them); empty when exportable.
        """
        problems = []
        name = self.layer.name
        if self.has_kernel:
            if self.weight_bits > 8:
                problems.append(f"layer {name!r}: weight_bits={self.weight_bits} (int8 TFLite holds at most 8)")
            if not self.weight_symmetric:
                problems.append(f"layer {name!r}: weight_symmetric=False (int8 TFLite weights are symmetric)")
            if self.per_channel and not self.facts.per_channel and not self._converter_quantizes_kernel:
                problems.append(
                    f"layer {name!r}: per-channel weights on {type(self.layer).__name__} (the converter "
                    f"cannot hold them; use weight_granularity='per_tensor')"
                )
        return problems  # activation ranges report for themselves (ActivationQuantizer.export_problems)

    def unset_ranges(self) -> list:
        """Lists this layer's activation ranges never set by calibration or training (``tflite_export.ranges``).

        ``to_tflite`` refuses the model while any is left.

        Returns:
            The names of the unset ranges the wrapper owns; empty when all are set.
        """
        return [name for q in self.quantizers for name in q.unset_ranges()]

    def get_config(self):
        config = super().get_config()
        config.update(
            # (a layer called several times has one wrapper per call, all holding it: saved as one object)
            layer=_shared_config(self.layer),
            batchnorm=None if self.batchnorm is None else keras.saving.serialize_keras_object(self.batchnorm),
            fused_activation=self.fused_activation,
            weight_bits=self.weight_bits,
            weight_symmetric=self.weight_symmetric,
            per_channel=self.per_channel,
            layer_calls=self.layer_calls,
            activation_bits=self.activation_bits,
            activation_symmetric=self.activation_symmetric,
            ema_decay=self.ema_decay,
            quantize_inputs=self.quantize_inputs,
            quantize_output=self.quantize_output,
            fixed_output_range=self.fixed_output_range,
            preserve=list(self.preserve),
            n_centroids=self.n_centroids,
            integer_kernels=self.integer_kernels,
            facts=self.facts.get_config(),
            quantizers={role: _shared_config(q) for role, q in zip(ROLES, self._owned()) if q is not None},
            placement=dict(
                {
                    name: None if getattr(self, f"_{name}") is None else _shared_config(getattr(self, f"_{name}"))
                    for name in PLACED
                },
                input_ranges=[None if q is None else _shared_config(q) for q in self._input_ranges],
                onto_output_grid=self.onto_output_grid,
            ),
        )
        return config

    def _owned(self):
        return (
            self.input_quantizer,
            self.between_quantizer,
            self.output_quantizer,
            self.sigmoid_quantizer,
            self.post_quantizer,
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        bn = config.pop("batchnorm", None)
        bn = None if bn is None else keras.saving.deserialize_keras_object(bn)
        return cls(layer, batchnorm=bn, **config)


def _in_saving_scope() -> bool:
    """Whether Keras is loading a saved model (its ObjectSharingScope): only then do the references in a config come
    back as the very quantizers the other layers own."""
    return serialization_lib.global_state.get_global_attribute("shared_objects/id_to_obj_map") is not None


def _placement_from_config(placement) -> dict:
    if not placement or not _in_saving_scope():  # a copy made from a config alone: re-placed in its new graph
        return {}
    placement = dict(placement)
    found = {name: _load(placement.get(name)) for name in PLACED}
    found["input_ranges"] = [_load(q) for q in placement.get("input_ranges") or ()]
    found["onto_output_grid"] = bool(placement.get("onto_output_grid", False))
    return found


def _takes_training(layer) -> bool:
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
