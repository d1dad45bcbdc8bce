"""build_training_state: a compiled model's first fit traces its training step once, and trains the same."""

import keras
import numpy as np

import keras_eff as ke
from keras_eff.fitting import build_training_state
from keras_eff.models import compile_classifier, small_cnn


def _traced_fit(model, x, y):
    """Fit one batch and count how often the training step was traced."""
    traces = []
    step = model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return len(traces)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return small_cnn(width=4)


def test_one_trace_and_the_same_training(rng):
    x = rng.uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    plain = _model()
    plain.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    traced_plain = _traced_fit(plain, x, y)
    built = _model()
    built.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in built.get_weights()]
    build_training_state(built, x, y)
    assert built.optimizer.built
    for a, b in zip(before, built.get_weights()):
        np.testing.assert_array_equal(a, b)  # building trains nothing
    assert _traced_fit(built, x, y) == 1
    assert traced_plain == 2  # Keras 3 on TensorFlow without the build: the reason for keras_eff.fitting
    for a, b in zip(plain.get_weights(), built.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_quantized_model_through_compile_classifier(rng):
    """compile_classifier builds the state from the model's input shape; a QAT model then traces once."""
    x = rng.uniform(0, 1, (16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 16)
    qat = compile_classifier(ke.quantize_model(_model()))
    assert qat.optimizer.built
    ke.calibrate(qat, x, progress=False)
    assert _traced_fit(qat, x, y) == 1


def test_uncompiled_or_unknown_shape_is_left_alone():
    model = _model()
    assert build_training_state(model) is model
    assert not model.compiled
    inputs = keras.Input((None, None, 3))
    ragged = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs)))
    ragged.compile(optimizer="adam", loss="mse")
    assert build_training_state(ragged) is ragged
    assert not ragged.optimizer.built
