"""Shared fixtures. Trained models are built once per session and shared; unit tests use tiny models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fmnist():
    """Fashion-MNIST as float (n, 28, 28, 1) in [0, 1]: 6,000 training and 2,000 test images."""
    from keras_eff.datasets import fashion_mnist_float

    return fashion_mnist_float(n_train=6000, n_test=2000)


@pytest.fixture(scope="session")
def rep_images(fmnist):
    (x_train, _), _ = fmnist
    return x_train[:200]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def sneaky_bn_freeze():
    """A callback class that sets every folded BatchNorm's ``bn_frozen`` before the second batch, behind ``fit``'s back
    (not through ``FreezeBatchNorm``, which retraces the step)."""
    import keras

    class SneakyFreeze(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                for layer in self.model.layers:
                    if getattr(layer, "batchnorm", None) is not None:
                        layer.bn_frozen.assign(1.0)

    return SneakyFreeze


@pytest.fixture(scope="session")
def trained_models(fmnist):
    """The four reference architectures, each trained briefly once for the whole session (keyed by name)."""
    import keras

    from keras_eff.models import ZOO, compile_classifier

    (x_train, y_train), _ = fmnist
    out = {}
    for name, build in ZOO.items():
        keras.utils.set_random_seed(1)
        model = compile_classifier(build(width=8))
        model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
        out[name] = model
    return out
