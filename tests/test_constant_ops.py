"""Keras ops with a constant operand (the preprocessing users write at a model's input) and Lambda layers traced into
Keras ops: full int8, and the simulation computes what the file computes."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import (
    ClipOnInputGrid,
    QuantizedConstantOp,
    integer_inference,
    quantization_report,
    set_integer_kernels,
)

MEAN = np.array([123.7, 116.8, 103.9], np.float32)
STD = np.array([58.4, 57.1, 57.4], np.float32)

PREPROCESSING = {  # name -> (the ops on the input, the input's scale)
    "x*2-1": (lambda t: t * 2.0 - 1.0, 1.0),
    "(x-0.5)/0.25": (lambda t: (t - 0.5) / 0.25, 1.0),
    "x+1": (lambda t: t + 1.0, 1.0),
    "1-x": (lambda t: 1.0 - t, 1.0),
    "(x-mean)/std": (lambda t: (t - MEAN) / STD, 255.0),
}


def _model(head, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    h = layers.Conv2D(8, 3, activation="relu", name="conv1")(head(inputs))
    h = layers.Conv2D(4, 3, name="conv2")(h)
    return keras.Model(inputs, layers.Dense(5, name="fc")(layers.Flatten()(h)))


def _data(scale, n=256, seed=0):
    x = np.random.default_rng(seed).random((n, 8, 8, 3)) * scale
    return (np.round(x) if scale > 1 else x).astype(np.float32)


def _quantized(model, x):
    q = ke.quantize_model(model)
    ke.calibrate(q, x[:64], progress=False)
    return q


def _exact_and_saved(q, x, tmp_path) -> list:
    """Exports ``q`` full int8, checks it bit-exact on XNNPACK and its ``.keras`` round trip; the file's op names."""
    data = te.to_tflite(q)
    assert te.find_float_islands(data) == []
    assert te.compare(q, data, x).max_lsb_diff == 0
    q.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))
    return te.read_graph(data).op_names()


@pytest.mark.parametrize("name", list(PREPROCESSING))
def test_preprocessing_at_the_input_is_bit_exact(name):
    """Computed in float, x·2 − 1 and its kin settled the rounding ties of the file's ADD/SUB otherwise (2 LSB at
    the output, where the input's grid and the op's align); now the integer arithmetic of XNNPACK's kernels."""
    head, scale = PREPROCESSING[name]
    x = _data(scale)
    q = _quantized(_model(head), x)
    assert any(isinstance(l, QuantizedConstantOp) for l in q.layers)
    data = te.to_tflite(q)
    assert te.find_float_islands(data) == []
    cmp = te.compare(q, data, x)
    assert cmp.max_lsb_diff == 0, cmp
    set_integer_kernels(q, "builtin")
    cmp = te.compare(q, data, x, kernels="builtin")
    assert cmp.max_lsb_diff == 0, cmp
    set_integer_kernels(q, "micro")  # TFLite Micro's reference ADD, SUB and MUL: bit-exact
    scale_out, zp = te.TFLiteModel(data).outputs[0]["quantization"]
    micro = np.asarray(te.run_micro(data, x[:100])[0])
    np.testing.assert_array_equal(te.runtime.quantize(q.predict(x[:100], verbose=0), scale_out, zp), micro)


def test_a_relu_after_the_op_is_fused_and_the_layer_saves(tmp_path):
    x = _data(1.0)
    q = _quantized(_model(lambda t: ops.relu(t * 2.0 - 1.0)), x)
    op = [l for l in q.layers if isinstance(l, QuantizedConstantOp)][-1]
    assert op.op == "subtract" and op.fused_activation == "relu"
    names = _exact_and_saved(q, x, tmp_path)
    assert "RELU" not in names and names.count("SUB") == 1  # fused into the SUB, as the converter does


def test_constant_op_keeps_the_batch_size_unknown():
    inputs = keras.Input((8, 8, 3))
    assert QuantizedConstantOp("subtract", MEAN)(inputs).shape == (None, 8, 8, 3)
    assert QuantizedConstantOp("multiply", [[2.0]] * 8, constant_first=True)(inputs).shape == (None, 8, 8, 3)


def test_constant_op_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="op='divide'.*add, subtract, multiply"):
        QuantizedConstantOp("divide", 2.0)
    with pytest.raises(ValueError, match="fused_activation='gelu'"):
        QuantizedConstantOp("add", 1.0, fused_activation="gelu")


LAMBDAS = {
    "tanh": lambda t: ops.tanh(t),
    "abs": lambda t: ops.abs(t - 0.5),
    "centered": lambda t: t - ops.mean(t, axis=-1, keepdims=True),
    "sqrt": lambda t: ops.sqrt(t + 0.1),
    "sin": lambda t: ops.sin(t),  # no int8 SIN: float, between ranges
}


@pytest.mark.parametrize("name", list(LAMBDAS))
def test_a_lambda_between_convolutions_is_traced_and_bit_exact(name):
    """Before, a Lambda stayed float and the converter quantized its ops from representative data: 3–5 LSB off."""
    fn = LAMBDAS[name]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(8, 3, activation="relu")(inputs)
    h = layers.Lambda(fn, name="user_fn")(h)
    h = layers.Conv2D(4, 3)(h)
    model = keras.Model(inputs, layers.Dense(5)(layers.Flatten()(h)))
    x = _data(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = ke.quantize_model(model)
    assert quantization_report(q).traced == ["user_fn"]
    ke.calibrate(q, x[:64], progress=False)
    data = te.to_tflite(q, allow_float=name == "sin")
    assert (te.find_float_islands(data) != []) == (name == "sin")
    assert te.compare(q, data, x).max_lsb_diff == 0


@keras.saving.register_keras_serializable(package="test_constant_ops")
class GatedTraining(layers.Layer):
    """Takes ``training`` as Keras layers do, and computes the same either way: traced."""

    def call(self, x, training=None):
        return x * ops.sigmoid(x)


@keras.saving.register_keras_serializable(package="test_constant_ops")
class WithMaskArgument(layers.Layer):
    """Declares ``mask`` (for masking support), which no mask reaches here: traced."""

    def call(self, x, mask=None, training=None):
        return ops.tanh(x) * 0.5 + 0.5


@keras.saving.register_keras_serializable(package="test_constant_ops")
class NoisyTraining(layers.Layer):
    """Computes otherwise in training (Gaussian noise): a trace would lose that, so it stays float."""

    def call(self, x, training=None):
        if training:
            return x + keras.random.normal(ops.shape(x), stddev=0.1, seed=1)
        return x * 1.0


@pytest.mark.parametrize("layer_class", [GatedTraining, WithMaskArgument, NoisyTraining])
def test_a_custom_layer_taking_training_or_mask_is_traced_only_where_both_modes_agree(layer_class):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(8, 3)(inputs)
    h = layer_class(name="custom")(h)
    model = keras.Model(inputs, layers.Dense(5)(layers.Flatten()(layers.Conv2D(4, 3)(h))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = ke.quantize_model(model)
    report = quantization_report(q)
    x = _data(1.0)
    ke.calibrate(q, x[:64], progress=False)
    if layer_class is not NoisyTraining:
        assert report.traced == ["custom"] and not caught
        assert te.compare(q, te.to_tflite(q), x).max_lsb_diff == 0
    else:
        assert report.float_layers == [("custom", "NoisyTraining has no quantized implementation")]
        assert any("NoisyTraining (custom)" in str(w.message) for w in caught)
        assert q.get_layer("custom_output_range").after_float  # its readers read int8


@keras.saving.register_keras_serializable(package="test_constant_ops")
class ChannelAffine(layers.Layer):
    """x · γ + β per channel, its weights as operands: traced, the weights trainable in the quantized model."""

    def build(self, input_shape):
        init = keras.initializers
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer=init.RandomUniform(0.5, 2.0))
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer=init.RandomNormal(0.0, 0.3))

    def call(self, x):
        return x * self.gamma - self.beta  # (``self.beta - ...`` is not traced: Keras's Variable computes eagerly)


@keras.saving.register_keras_serializable(package="test_constant_ops")
class LeftAffine(layers.Layer):
    """β − γ · x, the weights on the left (Keras's Variable computes such operators eagerly: traced through a
    stand-in)."""

    def build(self, input_shape):
        init = keras.initializers
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer=init.RandomUniform(0.5, 2.0))
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer=init.RandomNormal(0.0, 0.3))

    def call(self, x):
        return self.beta - self.gamma * x


@keras.saving.register_keras_serializable(package="test_constant_ops")
class ChannelMix(layers.Layer):
    """x @ W + b over the channels: the kernel a Dense's, the bias a trainable constant."""

    def build(self, input_shape):
        c = input_shape[-1]
        self.mix = self.add_weight(name="mix", shape=(c, c), initializer=keras.initializers.Orthogonal(seed=0))
        self.bias = self.add_weight(name="bias", shape=(c,), initializer=keras.initializers.RandomNormal(0.0, 0.3))

    def call(self, x):
        return ops.matmul(x, self.mix) + self.bias


@keras.saving.register_keras_serializable(package="test_constant_ops")
class Gate(layers.Layer):
    """x · sigmoid(g): the converter folds sigmoid(g) into a constant; traced, the gate trains through it."""

    def build(self, input_shape):
        self.gate = self.add_weight(
            name="gate", shape=(input_shape[-1],), initializer=keras.initializers.RandomNormal()
        )

    def call(self, x):
        return x * ops.sigmoid(self.gate)


@keras.saving.register_keras_serializable(package="test_constant_ops")
class Temperature(layers.Layer):
    """x / exp(log t), a learned temperature: the converter multiplies by the folded reciprocal."""

    def build(self, input_shape):
        self.log_t = self.add_weight(name="log_t", shape=(), initializer=keras.initializers.Constant(0.3))

    def call(self, x):
        return x / ops.exp(self.log_t)


@keras.saving.register_keras_serializable(package="test_constant_ops")
class LearnedFloor(layers.Layer):
    """max(x, floor) per channel: a MAXIMUM whose bound the file holds on x's grid; traced, the floor trains."""

    def build(self, input_shape):
        init = keras.initializers.RandomUniform(0.05, 0.3, seed=1)
        self.floor = self.add_weight(name="floor", shape=(input_shape[-1],), initializer=init)

    def call(self, x):
        return ops.maximum(self.floor, x)  # the bound first: MAXIMUM is symmetric


@keras.saving.register_keras_serializable(package="test_constant_ops")
class LearnedClip(layers.Layer):
    """min(x, exp(log α)): a learned clipping level as PACT trains it; the converter folds exp(log α) into MINIMUM's
    bound."""

    def build(self, input_shape):
        self.log_alpha = self.add_weight(
            name="log_alpha", shape=(input_shape[-1],), initializer=keras.initializers.RandomUniform(-1.5, -0.5, 2)
        )

    def call(self, x):
        return ops.minimum(x, ops.exp(self.log_alpha))


@keras.saving.register_keras_serializable(package="test_constant_ops")
class TiedScale(layers.Layer):
    """x · w + w: one weight read twice, which two trainable copies would untie: left float."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w + self.w


def _with_custom(layer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    h = layers.Conv2D(4, 3, name="conv2")(layer(h))
    return keras.Model(inputs, layers.Dense(5, name="fc")(layers.Flatten()(h)))


@pytest.mark.parametrize(
    "layer_class, ops_in_file",
    [
        (ChannelAffine, ["MUL", "SUB"]),
        (LeftAffine, ["MUL", "SUB"]),
        (ChannelMix, ["FULLY_CONNECTED", "ADD"]),
        (Gate, ["MUL"]),
        (Temperature, ["MUL"]),
        (LearnedFloor, ["MAXIMUM"]),
        (LearnedClip, ["MINIMUM"]),
    ],
)
def test_a_custom_layer_whose_weights_are_operands_is_traced_and_its_weights_train(layer_class, ops_in_file, tmp_path):
    """The converter sees x·γ − β as a MUL and a SUB on int8 constants, x @ W + b as a FULLY_CONNECTED, x·sigmoid(g)
    as a MUL by the folded sigmoid; kept float between the convolutions, the file computed them otherwise than the
    simulation (x @ W: 2 LSB, 57 % of outputs exact; x·sigmoid(g): 3 LSB). Traced, each weight is a Dense kernel or
    feeds a `QuantizedConstantOp`'s trainable constant: full int8, bit-exact, a training step moves the weights (the
    user's layer keeps its values)."""
    model = _with_custom(layer_class(name="custom"))
    custom = model.get_layer("custom")
    first, held = custom.weights[0], dict(vars(custom))
    original = np.asarray(first).copy()
    x = _data(1.0)
    q = _quantized(model, x)
    assert dict(vars(custom)) == held and custom.weights[0] is first  # its variables back in place
    assert quantization_report(q).traced == ["custom"] and quantization_report(q).float_layers == []
    copies = [w for w in q.trainable_weights if w.shape == first.shape and np.array_equal(np.asarray(w), original)]
    assert len(copies) == 1 and copies[0] is not first
    assert set(ops_in_file) <= set(_exact_and_saved(q, x, tmp_path))
    q.compile(keras.optimizers.Adam(0.01), "mse")
    q.fit(x, np.random.default_rng(1).normal(size=(len(x), 5)).astype(np.float32), epochs=1, verbose=0)
    assert not np.array_equal(np.asarray(copies[0]), original)
    np.testing.assert_array_equal(np.asarray(first), original)
    assert te.compare(q, te.to_tflite(q), x).max_lsb_diff == 0  # the file holds the trained weights' grid


@pytest.mark.parametrize("layer_class", [TiedScale])
def test_a_custom_layer_using_its_weights_otherwise_stays_float(layer_class):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(_with_custom(layer_class(name="custom")))
    report = quantization_report(q)
    assert report.traced == []
    assert report.float_layers == [("custom", f"{layer_class.__name__} has no quantized implementation")]


def _reference_constant_grid(c):
    """The converter's int8 grid of a constant operand, written out in numpy: per tensor, the range widened to hold 0
    (and to ±5e-7 where narrower than 1e-6), the zero point rounded half up, the values half away from zero."""
    c = np.asarray(c, np.float64)
    lo, hi = min(0.0, float(c.min())), max(0.0, float(c.max()))
    if hi - lo <= 1e-6:
        lo, hi = min(lo, -5e-7), max(hi, 5e-7)
    scale = (hi - lo) / 255.0
    zero = np.clip(np.floor(-128.0 - lo / scale + 0.5), -128, 127)
    q = np.clip(np.sign(c) * np.floor(np.abs(c) / scale + 0.5) + zero, -128, 127)
    return ((q - zero) * scale).astype(np.float32), scale


def test_the_constant_grid_in_tensor_ops_is_the_converters():
    """``constant_grid`` computes in tensor ops (a trainable constant's grid follows its weights) what the converter
    computes in double, value for value."""
    rng = np.random.default_rng(0)
    for k in range(50):
        c = (rng.normal(size=int(rng.integers(2, 40))) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
        c = np.abs(c) if k % 5 == 0 else c
        grid, step = _reference_constant_grid(c)
        tensor_grid, tensor_step = integer_inference.constant_grid(c)
        np.testing.assert_array_equal(np.asarray(tensor_grid), grid)
        assert float(tensor_step) == step


BOUNDS = {
    "ops.minimum(x, 0.5)": lambda t: ops.minimum(t, 0.5),
    "ops.maximum(x, 0.3)": lambda t: ops.maximum(t, 0.3),
    "ops.clip(x, 0.1, 0.9)": lambda t: ops.clip(t, 0.1, 0.9),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_constant_bounds_stay_on_their_inputs_grid(name, tmp_path):
    """TFLite's int8 MAXIMUM and MINIMUM keep one grid for inputs and output: a range of their own made the file
    requantize (ops.minimum(x, 0.5) was 3 LSB off, a clip 2 LSB with a QUANTIZE between its two ops)."""
    q = _quantized(_model(BOUNDS[name]), _data(1.0))
    assert any(isinstance(l, ClipOnInputGrid) for l in q.layers)
    assert "QUANTIZE" not in _exact_and_saved(q, _data(1.0, seed=1), tmp_path)


def test_clip_on_input_grid_needs_a_bound():
    with pytest.raises(ValueError, match="give low, high or both"):
        ClipOnInputGrid()
    with pytest.raises(ValueError, match="learned=True takes one bound"):
        ClipOnInputGrid(low=0.0, high=1.0, learned=True)
    with pytest.raises(ValueError, match="ClipOnInputGrid: function .* needs learned=True"):
        ClipOnInputGrid(low=0.0, function=keras.Sequential([layers.Activation("sigmoid")]))


BINARY = {
    "a + b": lambda a, b: a + b,
    "a - b": lambda a, b: a - b,
    "a * b": lambda a, b: a * b,
    "layers.Subtract": lambda a, b: layers.Subtract()([a, b]),
}


@pytest.mark.parametrize("name", list(BINARY))
def test_operators_on_two_tensors_compute_as_the_files_add_sub_and_mul(name):
    """``a + b`` written as a Python operator was added in float and rounded onto the output grid: a tie there rounded
    otherwise than the file's integer ADD (1 LSB, once in 300,000 outputs of a trained block). Now the Add, Subtract
    or Multiply layer, whose integer arithmetic inference follows; SUB as LiteRT's reference kernel rounds it."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(6, 3, padding="same", name="b")(inputs)
    h = BINARY[name](a, b)
    model = keras.Model(inputs, layers.Dense(5, name="fc")(layers.Flatten()(layers.Conv2D(4, 3)(h))))
    x = _data(1.0, n=512)
    q = _quantized(model, x)
    merges = [
        l for l in q.layers if isinstance(getattr(l, "layer", None), (layers.Add, layers.Subtract, layers.Multiply))
    ]
    assert len(merges) == 1
    data = te.to_tflite(q)
    assert te.find_float_islands(data) == []
    for kernels in ("xnnpack", "builtin"):
        set_integer_kernels(q, kernels)
        assert te.compare(q, data, x, kernels=kernels).max_lsb_diff == 0, kernels
