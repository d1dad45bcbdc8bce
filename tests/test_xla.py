"""XLA: ``model.compile(jit_compile=True)`` trains QAT, pruned and clustered models (TensorFlow's FakeQuant ops,
the wrappers' tf.cond and variable updates all compile), with a loss and variables close to the same steps without
XLA (docs/distributed.md)."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke


def _float_model():
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
    h = layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = layers.ReLU()(h)
    h = layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = layers.Flatten()(h)
    return keras.Model(inputs, layers.Dense(3, name="fc")(h))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 64)
    keras.utils.set_random_seed(0)
    return x, y, _float_model().get_weights()


def _train(kind, jit, x, y, weights):
    model = _float_model()
    model.set_weights(weights)
    callbacks = []
    if kind == "qat":
        model = ke.quantize_model(model)
        ke.calibrate(model, x[:32], progress=False)
        callbacks = [ke.callbacks.FreezeBatchNorm(step=2), ke.callbacks.FreezeRanges(step=3)]
    elif kind == "prune":
        model = ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0, frequency=2), min_weights=0)
        callbacks = [ke.callbacks.UpdatePruning()]
    else:
        model = ke.cluster_model(model, 4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    loss = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=callbacks).history["loss"][0]
    return model, loss


@pytest.mark.parametrize("kind", ["qat", "prune", "cluster"])
def test_jit_compile_trains_close_to_no_xla(kind, setup):
    x, y, weights = setup
    plain, loss = _train(kind, False, x, y, weights)
    xla, loss_xla = _train(kind, True, x, y, weights)
    assert xla.jit_compile is True  # Keras did not turn XLA off for this model
    assert np.isfinite(loss_xla)
    assert loss_xla == pytest.approx(loss, rel=1e-3)
    # XLA fuses and reorders float arithmetic: a value that lands next to a fake-quant rounding boundary can move
    # one grid step, so QAT is compared at a grid step's size, the others tightly
    atol = 1e-2 if kind == "qat" else 1e-5
    for a, b in zip(plain.variables, xla.variables):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=atol, rtol=1e-3, err_msg=a.path)
    if kind == "prune":
        assert all(s == pytest.approx(0.5, abs=0.05) for s in ke.pruning.layer_sparsities(xla).values())
    if kind == "cluster":
        assert len(np.unique(np.asarray(ke.strip(xla).get_layer("conv2").kernel))) <= 4
