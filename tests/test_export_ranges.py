"""to_tflite refuses a quantized model whose activation ranges were never set (the ``unset_ranges`` protocol of
tflite_export.ranges), until calibration or training sets them; the state survives .keras save and load."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import ActivationQuantizer


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, layers.Softmax(name="probs")(x), name="tiny")


@pytest.fixture
def x(rng):
    return (rng.random((64, 8, 8, 1), dtype=np.float32) * 255.0).astype(np.float32)  # raw pixels: far from [-1, 1]


def test_uncalibrated_model_is_refused_naming_the_first_layer(x):
    q = ke.quantize_model(_model())
    unset = te.find_unset_ranges(q)
    assert [name for name, _ in unset] == ["pixels_input_range", "quant_conv", "quant_logits"]
    assert unset[1] == ("quant_conv", ["conv_output_range"])  # the softmax's fixed range is never unset
    with pytest.raises(te.UncalibratedModelError) as err:
        te.to_tflite(q)
    text = str(err.value)
    assert "first is in layer 'pixels_input_range'" in text and "2 more" in text
    assert "keras_eff.calibrate(model, x)" in text and "allow_uncalibrated=True" in text
    assert err.value.layers == unset
    assert isinstance(err.value, te.TFLiteExportError)
    # representative data does not replace the model's own ranges: still refused
    with pytest.raises(te.UncalibratedModelError):
        te.to_tflite(q, representative_data=x)
    assert te.find_float_islands(te.to_tflite(q, allow_uncalibrated=True)) == []  # the escape hatch
    te.to_tflite(q, quantize=False)  # a float file reads no range
    with pytest.raises(te.UncalibratedModelError, match="pixels_input_range"):  # ONNX too
        te.to_onnx(q)


def test_refusal_names_the_first_layer_left_unset(x):
    q = ke.quantize_model(_model())
    ke.calibrate(q, x, progress=False)
    assert te.find_unset_ranges(q) == []
    q.get_layer("quant_logits").output_quantizer.initialized.assign(0.0)
    with pytest.raises(te.UncalibratedModelError, match=r"first is in layer 'quant_logits' \(logits_output_range\)\."):
        te.to_tflite(q)


def test_calibrated_model_exports_and_keeps_its_ranges(x):
    q = ke.quantize_model(_model())
    ke.calibrate(q, x, progress=False)
    data = te.to_tflite(q)
    scale, _ = te.TFLiteModel(data).inputs[0]["quantization"]
    assert scale == pytest.approx(x.max() / 255.0, rel=1e-2)  # the calibrated input range, not the placeholder


def test_one_training_step_sets_the_ranges(x, rng):
    q = ke.quantize_model(_model())
    q.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    q.fit(x[:16], rng.integers(0, 3, 16), batch_size=16, epochs=1, verbose=0)
    assert te.find_unset_ranges(q) == []
    assert te.find_float_islands(te.to_tflite(q)) == []


def test_a_range_learned_by_gradient_is_set_by_training(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    q = ActivationQuantizer(trainable_range=True, name="learned")
    model = keras.Model(inputs, layers.Dense(2)(q(inputs)))
    assert q.unset_ranges() == ["learned"]
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.random((8, 4)), rng.random((8, 2)), batch_size=8, epochs=1, verbose=0)
    assert q.unset_ranges() == []


def test_the_state_survives_save_and_load(x, tmp_path):
    calibrated = ke.quantize_model(_model())
    ke.calibrate(calibrated, x, progress=False)
    calibrated.save(tmp_path / "calibrated.keras")
    ke.quantize_model(_model()).save(tmp_path / "fresh.keras")
    loaded = keras.saving.load_model(tmp_path / "calibrated.keras")
    assert te.to_tflite(loaded) == te.to_tflite(calibrated)
    fresh = keras.saving.load_model(tmp_path / "fresh.keras")
    with pytest.raises(te.UncalibratedModelError, match="pixels_input_range"):
        te.to_tflite(fresh)
