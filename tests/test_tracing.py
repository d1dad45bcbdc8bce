"""Custom layers built from Keras layers (a residual block, a squeeze-excite block, as users write them) are traced by
quantize_model into the layers and ops they call: quantized as if written in the functional model, full int8 and
bit-exact, trainable, the user's layers unchanged."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import quantization_report


@keras.saving.register_keras_serializable(package="test_tracing")
class ResidualBlock(layers.Layer):
    """conv → BN → ReLU, plus the input; sublayers named as users name them (two blocks share the names)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = layers.Conv2D(filters, 3, padding="same", name="conv")
        self.bn = layers.BatchNormalization(name="bn")

    def call(self, x, training=None):
        return ops.relu(self.bn(self.conv(x), training=training)) + x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="test_tracing")
class SqueezeExcite(layers.Layer):
    """Global pooling, two dense layers, a sigmoid gate on the input; a Dropout handed ``training``."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.pool = layers.GlobalAveragePooling2D(keepdims=True)
        self.squeeze = layers.Dense(max(channels // 2, 1), activation="relu")
        self.excite = layers.Dense(channels, activation="sigmoid")
        self.drop = layers.Dropout(0.2)

    def call(self, x, training=None):
        return self.drop(x * self.excite(self.squeeze(self.pool(x))), training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="test_tracing")
class SharedTwice(layers.Layer):
    """One conv called twice: its copies in the quantized model would part, so the layer stays float."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(8, 3, padding="same")

    def call(self, x):
        return self.conv(ops.relu(self.conv(x)))


@keras.saving.register_keras_serializable(package="test_tracing")
class ScaledDepthwise(layers.Layer):
    """x + γ · depthwise(x), ConvNeXt-like: a sublayer and a weight of its own in one layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dw = layers.DepthwiseConv2D(3, padding="same")

    def build(self, input_shape):
        self.dw.build(input_shape)
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],), initializer=keras.initializers.Constant(0.5)
        )

    def call(self, x):
        return x + self.gamma * self.dw(x)


def _model(*blocks):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    for block in blocks:
        h = block(h)
    h = layers.Conv2D(4, 3, name="last")(h)
    return keras.Model(inputs, layers.Dense(5, name="fc")(layers.Flatten()(h)))


def _trained(model, x):
    model.compile("adam", "mse")
    model.fit(x, np.random.default_rng(1).normal(size=(len(x), 5)).astype(np.float32), epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((256, 12, 12, 3)).astype(np.float32)


def test_custom_blocks_are_traced_into_their_layers_and_export_bit_exact(x, tmp_path):
    """Kept float, a block's conv and add were float ops in the file (to_tflite refused it): the converter's own
    PTQ quantizes them. Traced, the block's conv folds its BN and fuses its ReLU as in a functional model."""
    model = _trained(
        _model(ResidualBlock(8, name="res1"), ResidualBlock(8, name="res2"), SqueezeExcite(8, name="se")), x
    )
    before = [np.asarray(w).copy() for w in model.weights]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing kept float: no warning
        q = ke.quantize_model(model)
    report = quantization_report(q)
    assert report.traced == ["res1", "res2", "se"] and report.float_layers == []
    assert {"res1_conv", "res2_conv"} <= {n for n, _ in report.folded_batchnorm}
    ke.calibrate(q, x[:64], progress=False)
    data = te.to_tflite(q)
    assert te.find_float_islands(data) == []
    assert te.compare(q, data, x).max_lsb_diff == 0
    kinds = {type(l) for l in q._flatten_layers(include_self=False, recursive=True)}
    assert not kinds & {ResidualBlock, SqueezeExcite}  # the file needs none of the user's classes
    q.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)  # the user's model is not changed


def test_a_traced_block_trains_and_stays_bit_exact(x):
    model = _trained(_model(ResidualBlock(8, name="res")), x)
    user_kernel = np.asarray(model.get_layer("res").conv.kernel).copy()
    q = ke.quantize_model(model)
    ke.calibrate(q, x[:64], progress=False)
    (wrapper,) = [l for l in q.layers if getattr(l, "layer", None) is not None and l.layer.name == "res_conv"]
    start = np.asarray(wrapper.layer.kernel).copy()
    np.testing.assert_array_equal(start, user_kernel)
    _trained(q, x)
    assert not np.array_equal(np.asarray(wrapper.layer.kernel), start)
    np.testing.assert_array_equal(np.asarray(model.get_layer("res").conv.kernel), user_kernel)
    assert te.compare(q, te.to_tflite(q), x).max_lsb_diff == 0


def test_a_sublayer_called_twice_keeps_the_block_float(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(_model(SharedTwice(name="twice")))
    report = quantization_report(q)
    assert report.traced == [] and report.float_layers == [("twice", "SharedTwice has no quantized implementation")]


def test_a_block_with_a_sublayer_and_a_weight_of_its_own(x):
    model = _trained(_model(ScaledDepthwise(name="sdw")), x)
    q = ke.quantize_model(model)
    assert quantization_report(q).traced == ["sdw"]
    ke.calibrate(q, x[:64], progress=False)
    data = te.to_tflite(q)
    assert {"DEPTHWISE_CONV_2D", "MUL", "ADD"} <= set(te.read_graph(data).op_names())
    assert te.compare(q, data, x).max_lsb_diff == 0


def test_adaround_with_the_float_model_rounds_the_layers_of_a_traced_block(x):
    """A traced block's sublayers are copies named ``<block>_<sublayer>`` that the float model holds only inside the
    block: AdaRound computes their targets from the quantized model (it refused ``float_model`` before, "no layer
    named 'se_dense'"). A conv whose BatchNorm is folded inside the block is skipped, naming the block."""
    model = _trained(_model(ResidualBlock(8, name="res"), SqueezeExcite(8, name="se")), x)
    eq = ke.ptq.equalize(model)
    q = ke.quantize_model(eq)
    ke.calibrate(q, x[:64], progress=False)
    rounded = ke.ptq.adaround(q, x[:64], iterations=5, float_model=eq)
    report = ke.get_report(rounded, "adaround")
    se_layers = {n for n in report.layers if n.startswith("se_")}
    assert len(se_layers) == 2 and {"stem", "last", "fc"} <= set(report.layers), report.layers
    (reason,) = [r for n, r in report.skipped if n == "res_conv"]
    assert "custom layer 'res'" in reason, reason
    for name in se_layers:  # on the int8 grid: re-quantizing the rounded kernel is the identity
        (w,) = [l for l in rounded.layers if getattr(l, "layer", None) is not None and l.layer.name == name]
        kernel = np.asarray(w.layer.kernel)
        np.testing.assert_array_equal(np.asarray(w.quantized_kernels()[0]["kernel"]).reshape(kernel.shape), kernel)


def test_a_quant_config_may_name_a_traced_blocks_sublayer_copy(x):
    """The copies are named ``<block>_<sublayer>``; a `QuantConfig` naming one sets that copy (it was refused as
    naming no layer, which broke ``layer_sensitivity`` on such a model: it names every quantized layer)."""
    model = _model(ResidualBlock(8, name="res"))
    q = ke.quantize_model(model, ke.QuantConfig(overrides={"res_conv": {"weight_bits": 4}}))
    bits = {l.layer.name: l.weight_bits for l in q.layers if getattr(l, "layer", None) is not None}
    assert bits["res_conv"] == 4 and bits["stem"] == 8
    with pytest.raises(ValueError, match=r"\['res_conf'\], which match no layer"):
        ke.quantize_model(model, ke.QuantConfig(overrides={"res_conf": {"weight_bits": 4}}))

    def accuracy_proxy(m):
        return -float(np.mean(np.square(m.predict(x[:32], verbose=0))))

    sensitivity = ke.quantization.layer_sensitivity(model, x[:32], accuracy_proxy, candidate_bits=(4,))
    assert "res_conv" in sensitivity and "stem" in sensitivity
