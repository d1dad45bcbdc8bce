"""The registry of layer facts and its protocol for custom layers (issue #17, part 1): a custom layer that declares its
facts is quantized and exports full int8 with the simulation equal to LiteRT; a registration by class does the same
for a class the user does not own; the facts travel in the saved model; misuse names the method and the layer."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
import tflite_export as te
from keras_eff.layers import LayerFactsError, facts_for, unregister_layer
from keras_eff.quantization import quantization_report


@keras.saving.register_keras_serializable(package="test_registry")
class ScaledDense(layers.Layer):
    """A user's dense layer: matmul, a learned per-unit scale and a bias, written with Keras ops."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return ops.matmul(x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def keras_eff_facts(self):
        return ke.LayerFacts(
            kernels={"kernel": "last"}, output_range="own", prunable=True, clusterable=True, channels="produce"
        )

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="test_registry")
class Clip(layers.Layer):
    """A weightless custom layer (no declaration of its own): registered by class in the test."""

    def call(self, x):
        return ops.clip(x, 0.0, 4.0)


@keras.saving.register_keras_serializable(package="test_registry")
class Undeclared(layers.Layer):
    """A custom layer whose weight is read twice (x · w + w), which keras-eff does not trace (two trainable copies
    would part)."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w + self.w


@keras.saving.register_keras_serializable(package="test_layer_registry")
class Stateless(layers.Layer):
    def call(self, x):
        return ops.maximum(x * 0.5, ops.tanh(x))


class BadFacts(layers.Layer):
    def call(self, x):
        return x

    def keras_eff_facts(self):
        return {"output_range": "own"}


class WrongKernel(layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1],))

    def call(self, x):
        return x * self.w

    def keras_eff_facts(self):
        return ke.LayerFacts(kernels={"kernel": "last"}, output_range="own")


def _data(n=256, d=12, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n, d)).astype(np.float32)


def _model(custom):
    inputs = keras.Input((12,))
    x = layers.Dense(16, activation="relu", name="dense_in")(inputs)
    x = custom(x)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x))


def _int8_parity(qat, x):
    data = te.to_tflite(qat)  # refuses float islands
    assert not te.find_float_islands(data)
    cmp = te.compare(qat, data, x)
    assert cmp.max_lsb_diff <= 1, str(cmp)
    assert cmp.argmax_agreement == 1.0, str(cmp)
    return data


def test_declared_layer_is_quantized_and_exports_full_int8(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model(ScaledDense(8, name="scaled"))
    x = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is kept float: no warning
        qat = ke.quantize_model(model)
    wrapper = qat.get_layer("quant_scaled")
    assert wrapper.has_kernel and not wrapper.builtin_kernel
    assert "scaled" in quantization_report(qat).quantized
    ke.calibrate(qat, x, progress=False)
    # the kernel the layer computes with is on an 8-bit symmetric grid: at most 255 distinct values
    kernel = np.asarray(wrapper.quantize_kernel("kernel", wrapper.layer.kernel))
    assert len(np.unique(kernel)) <= 255
    assert not np.allclose(kernel, np.asarray(wrapper.layer.kernel))  # fake-quantized, not the float kernel
    data = _int8_parity(qat, x)
    # one train step leaves it exportable, and the .keras file reloads with the same outputs and no custom_objects
    qat.compile(optimizer="sgd", loss="mse")
    qat.fit(x[:32], np.zeros((32, 5)), verbose=0)
    path = tmp_path / "declared.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    assert loaded.get_layer("quant_scaled").facts == wrapper.facts
    assert data  # the first export


def test_registered_class_is_quantized_and_the_facts_are_saved(tmp_path):
    keras.utils.set_random_seed(1)
    ke.register_layer(Clip, ke.LayerFacts(output_range="own", channels="pass"))
    try:
        model = _model(Clip(name="clip"))
        x = _data(seed=1)
        qat = ke.quantize_model(model)
        assert "clip" in quantization_report(qat).quantized
        ke.calibrate(qat, x, progress=False)
        _int8_parity(qat, x)
        path = tmp_path / "registered.keras"
        qat.save(path)
    finally:
        unregister_layer(Clip)
    assert facts_for(Clip()).output_range == "float"  # the registration is gone ...
    loaded = keras.saving.load_model(path)  # ... and the wrapper kept the facts it was made with
    assert loaded.get_layer("quant_clip").facts.output_range == "own"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)


def test_unknown_layer_stays_float_and_the_warning_says_where_to_declare_it():
    model = _model(Undeclared(name="half"))
    with pytest.warns(UserWarning) as record:
        qat = ke.quantize_model(model)
    text = "\n".join(str(w.message) for w in record)
    assert "Undeclared (half)" in text and "keras_eff_facts()" in text and "register_layer" in text
    assert ("half", "Undeclared has no quantized implementation") in quantization_report(qat).float_layers


def test_stateless_custom_layer_is_quantized_as_its_keras_ops_and_loads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(2)
    model = _model(Stateless(name="gate"))
    x = _data(seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not kept float: no warning
        qat = ke.quantize_model(model)
    report = quantization_report(qat)
    assert report.traced == ["gate"] and report.float_layers == []
    ke.calibrate(qat, x, progress=False)
    data = _int8_parity(qat, x)  # full int8 (MUL, TANH, a requantize onto MAXIMUM's grid), within 1 LSB
    assert {"MUL", "TANH", "MAXIMUM"} <= set(te.read_graph(data).op_names())
    qat.save(tmp_path / "traced.keras")
    loaded = keras.saving.load_model(tmp_path / "traced.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert quantization_report(loaded).traced == ["gate"]


def test_protocol_misuse_names_the_method_and_the_layer():
    with pytest.raises(LayerFactsError, match=r"BadFacts\.keras_eff_facts\(\) of layer 'bad'.*LayerFacts"):
        ke.quantize_model(_model(BadFacts(name="bad")))
    with pytest.raises(LayerFactsError, match=r"keras_eff_facts\(\) of layer 'wrong'.*\['kernel'\].*\['w'\]"):
        ke.quantize_model(_model(WrongKernel(name="wrong")))
    with pytest.raises(LayerFactsError, match="output_range='somewhere'"):
        ke.LayerFacts(output_range="somewhere")
    with pytest.raises(LayerFactsError, match="fixed_range"):
        ke.LayerFacts(output_range="fixed")
    with pytest.raises(LayerFactsError, match="prunable=True needs the kernels"):
        ke.LayerFacts(prunable=True)
    with pytest.raises(LayerFactsError, match="unknown keys"):
        ke.LayerFacts.from_config({"output_range": "own", "colour": "red"})
    with pytest.raises(LayerFactsError, match="Keras layer class"):
        ke.register_layer(int, ke.LayerFacts())


def test_builtin_facts_roundtrip_and_answer_for_keras_layers():
    from keras_eff.layers.registry import _BUILTIN

    for cls, entry in _BUILTIN.items():
        facts = entry if isinstance(entry, ke.LayerFacts) else None
        if facts is not None:
            assert ke.LayerFacts.from_config(facts.get_config()) == facts, cls.__name__
    assert facts_for(layers.ReLU(negative_slope=0.1, max_value=6.0)).output_range == "float"  # several ops
    assert facts_for(layers.ReLU(max_value=6.0)).output_range == "own"
    assert facts_for(layers.SeparableConv2D(4, 3)).main_kernel == "pointwise_kernel"
    assert facts_for(layers.Activation("sigmoid")).fixed_range == (0.0, 255 / 256)
    assert facts_for(layers.Activation("hard_swish")).int8_kernel == "hard_swish"
    assert facts_for(layers.MaxPooling2D()).output_range == "inherit"
    assert facts_for(layers.Concatenate()).output_range == "shared"
    t = ops.sigmoid(keras.Input((3,)))
    assert facts_for(t._keras_history.operation).output_range == "fixed"  # a Keras op in a functional graph
