"""Simulation equals deployment: trained QAT models vs their int8 TFLite files on 1,000 Fashion-MNIST test images."""

import keras
import numpy as np
import pytest

import keras_eff as ke
import tflite_export as te
from keras_eff.models import ZOO, compile_classifier, mobilenet_v2, mobilenet_v3_small

ARCHITECTURES = {
    **{name: (lambda build=build: build(width=16)) for name, build in ZOO.items()},
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_small": mobilenet_v3_small,
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parity_data():
    from keras_eff.datasets import fashion_mnist_float

    return fashion_mnist_float(n_train=8000, n_test=1000)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def qat_export(request, parity_data):
    """One architecture trained in float, quantized, calibrated, fine-tuned with QAT and exported."""
    (x, y), _ = parity_data
    keras.utils.set_random_seed(3)
    model = compile_classifier(ARCHITECTURES[request.param]())
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    qat = compile_classifier(ke.quantize_model(model), learning_rate=3e-4)
    ke.calibrate(qat, x[:512], progress=False)
    qat.fit(x[:4000], y[:4000], batch_size=64, epochs=1, verbose=0, callbacks=[ke.callbacks.FreezeBatchNorm(step=30)])
    return request.param, model, qat, te.to_tflite(qat)


def test_simulation_equals_int8_tflite(qat_export, parity_data):
    name, model, qat, data = qat_export
    _, (x_test, y_test) = parity_data
    assert te.find_float_islands(data) == []  # full int8, from the model's own ranges
    cmp = te.compare(qat, data, x_test)
    print(f"{name}: {cmp}")
    assert cmp.n == 1000
    assert cmp.within_1_lsb >= 0.99, f"{name}: {cmp}"
    assert cmp.max_lsb_diff <= 2, f"{name}: {cmp}"
    assert cmp.all_disagreements_near_ties, f"{name}: {cmp}"
    # and the QAT model learned something: clearly above chance on held-out images
    acc = np.mean(np.argmax(te.TFLiteModel(data).predict(x_test), axis=1) == y_test)
    assert acc > 0.5, f"{name}: int8 accuracy {acc:.3f}"
