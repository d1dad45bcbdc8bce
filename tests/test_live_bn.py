"""One QAT step with live BatchNorm statistics on a freshly initialised model (weights=None style), as
benchmarks/applications_check.py runs keras.applications models without --freeze-bn.

The mechanism, in miniature: a pre-activation residual CNN (ResNet50V2's block structure and BN epsilon) whose
inputs are dim (0..0.1), so that in inference mode (moving variance 1) its activations are small and calibration sets
narrow ranges. A live-BN step normalizes by the batch statistics; clipped at those ranges, each BN's input keeps their
small scale, and the scale-invariant BN multiplies the gradient by γ/σ_B at every pre-activation BN. Without the floor
on σ_B (``wrapper.MAX_LIVE_BN_GAIN``) the stem's gradient was 1.9e6 here, with it 0.18 (ResNet50V2 at 64 px: 2e13,
and the step left kernels of 2e9 and a file whose scales crashed XNNPACK; with it, 4.2).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import wrapper as wrapper_lib
from keras_eff.quantization.quantizers import ActivationQuantizer


def _preact_resnet(depth=6, width=8, size=16):
    inputs = keras.Input((size, size, 3))
    # (a pooling after the stem, as in ResNet50V2: a BN reading a conv that has other consumers is left float)
    x = layers.MaxPooling2D(2)(layers.Conv2D(4 * width, 3, padding="same", name="stem")(inputs))
    for _ in range(depth):
        y = layers.ReLU()(layers.BatchNormalization(epsilon=1.001e-5)(x))
        y = layers.ReLU()(layers.BatchNormalization(epsilon=1.001e-5)(layers.Conv2D(width, 1, use_bias=False)(y)))
        y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
        y = layers.ReLU()(layers.BatchNormalization(epsilon=1.001e-5)(y))
        x = layers.Add()([x, layers.Conv2D(4 * width, 1)(y)])
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1.001e-5)(x))
    outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture
def fresh_calibrated():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.uniform(0, 1, (16, 16, 16, 3))).astype("float32")
    y = rng.integers(0, 10, 16)
    qat = ke.quantize_model(_preact_resnet())
    ke.calibrate(qat, x, progress=False)
    return qat, x, y


def _stem_gradient(qat, x, y):
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y[:8], qat(x[:8], training=True))
    grads = tape.gradient(loss, qat.trainable_variables)
    return max(
        float(tf.reduce_max(tf.abs(g)))
        for g, v in zip(grads, qat.trainable_variables)
        if g is not None and "stem" in v.path
    )


def test_the_tiny_model_reproduces_the_blow_up_without_the_floor(fresh_calibrated, monkeypatch):
    """Guards the reproduction itself: with σ_B unbounded (the code before the floor) the gradient explodes."""
    monkeypatch.setattr(wrapper_lib, "MAX_LIVE_BN_GAIN", float("inf"))
    assert _stem_gradient(*fresh_calibrated) > 1e4  # measured 1.9e6


def test_live_bn_step_on_a_fresh_model_stays_bounded_and_exports_bit_exact(fresh_calibrated):
    qat, x, y = fresh_calibrated
    assert _stem_gradient(qat, x, y) < 100  # measured 0.18; 1.9e6 without the floor
    before = [v.numpy().copy() for v in qat.trainable_variables]
    # (eagerly: the same step; tracing fit's function, both branches of the live/frozen BN cond, took 13 s here)
    qat.compile(optimizer=keras.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy", run_eagerly=True)
    qat.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # live statistics: no FreezeBatchNorm
    for v, b in zip(qat.trainable_variables, before):
        assert np.all(np.isfinite(v.numpy())), v.path
        assert np.max(np.abs(v.numpy() - b)) < 1e-2, v.path
    for q in qat._flatten_layers(include_self=False, recursive=True):
        if isinstance(q, ActivationQuantizer):
            lo, hi = float(q.range_min.numpy()), float(q.range_max.numpy())
            assert np.isfinite(lo) and np.isfinite(hi) and -10 < lo <= 0 <= hi < 10, (q.name, lo, hi)
    data = te.to_tflite(qat)
    assert te.find_float_islands(data) == []
    cmp = te.compare(qat, data, x)
    assert cmp.max_lsb_diff == 0, cmp
