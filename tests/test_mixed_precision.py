"""Quantization-aware training under a mixed-precision policy: fake quantization, ranges and weights stay float32,
training reduces the loss, and the int8 file is the same kind of file as without a policy (docs/distributed.md)."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import QuantizeWrapper
from keras_eff.quantization.quantizers import ActivationQuantizer


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((192, 8, 8, 1), dtype=np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(int) + (x[:, :4].mean(axis=(1, 2, 3)) > 0.5)
    return x, y


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
    h = layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = layers.ReLU()(h)
    a = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = layers.Add(name="add")([a, h])
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    return keras.Model(inputs, layers.Dense(3, name="fc")(h))


def _train_and_export(x, y):
    model = _model()
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:64], progress=False)
    qat.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = qat.evaluate(x, y, verbose=0)
    qat.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[ke.callbacks.FreezeBatchNorm(epoch=1)])
    after = qat.evaluate(x, y, verbose=0)
    return model, qat, before, after, te.to_tflite(qat)


def _kind(int8):
    interpreter = te.make_interpreter(int8)
    graph = te.read_graph(int8)
    return (
        interpreter.get_input_details()[0]["dtype"],
        interpreter.get_output_details()[0]["dtype"],
        sorted(op.name for op in graph.ops),
        te.find_float_islands(int8),
    )


@pytest.fixture(scope="module")
def reference():
    x, y = _data()
    return _kind(_train_and_export(x, y)[-1])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_qat_under_mixed_policy_stays_float32_trains_and_exports_the_same_kind(policy, reference):
    x, y = _data()
    model, qat, before, after, int8 = _train_and_export(x, y)
    assert model.get_layer("add").compute_dtype != "float32"  # the float model is the user's, under the policy
    assert model.get_layer("flatten").compute_dtype != "float32"  # a shared stateless layer is left unchanged
    for layer in qat._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (QuantizeWrapper, ActivationQuantizer)):
            assert layer.compute_dtype == "float32", layer.name
        if isinstance(layer, QuantizeWrapper):
            assert layer.layer.compute_dtype == "float32", layer.name
    assert {v.dtype for v in qat.variables} == {"float32"}
    assert qat.output.dtype == "float32"
    assert after < before
    kind = _kind(int8)
    assert kind == reference
    assert kind[0] == np.int8 and kind[1] == np.int8 and kind[3] == []
    assert "CAST" not in kind[2] and "DEQUANTIZE" not in kind[2]


def test_weight_quantizer_computes_in_float32_and_returns_the_input_dtype():
    from keras_eff.quantization.quantizers import WeightQuantizer

    w = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    q32 = np.asarray(WeightQuantizer(8)(keras.ops.convert_to_tensor(w)))
    q16 = WeightQuantizer(8)(keras.ops.cast(keras.ops.convert_to_tensor(w), "float16"))
    assert q16.dtype == "float16"
    np.testing.assert_allclose(np.asarray(q16, np.float32), q32, atol=1e-3)
