import keras
import numpy as np
import pytest
from keras import layers

import tflite_export
from keras_eff.compression import NothingToCompressError, SpatialSvdConfig, count_macs, spatial_svd, split_conv_kernel
from keras_eff.compression.svd import SpatialSvdScheme

FEW = SpatialSvdConfig(candidate_ratios=(0.8, 0.6, 0.4, 0.2))


def _random_weights(model, rng):
    for w in model.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return model


def _odd_model():
    inputs = keras.Input((13, 11, 3))
    x = layers.Conv2D(5, (3, 5), strides=2, padding="same", activation="relu", name="strided")(inputs)
    x = layers.Conv2D(4, 3, dilation_rate=2, padding="valid", use_bias=False, name="dilated")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(6, activation="tanh", name="fc")(x))


def test_full_rank_reproduces_every_layer(rng):
    model = _random_weights(_odd_model(), rng)
    scheme = SpatialSvdScheme(model, SpatialSvdConfig())
    full = {"strided": min(3 * 3, 5 * 5), "dilated": min(3 * 5, 3 * 4), "fc": 6}
    new = scheme.build(full)
    x = rng.normal(size=(4, 13, 11, 3)).astype("float32")
    np.testing.assert_allclose(new(x), model(x), rtol=1e-4, atol=1e-4)
    names = {layer.name for layer in new.layers}
    assert {"strided_svd_a", "strided_svd_b", "dilated_svd_a", "fc_svd_b"} <= names and "strided" not in names
    assert new.get_layer("strided_svd_a").kernel.shape == (3, 1, 3, 9)
    assert new.get_layer("strided_svd_b").kernel.shape == (1, 5, 9, 5)
    # the analytic cost the selection uses is what the built model costs
    counted = count_macs(new)
    assert scheme.cost_of(full) == {"macs": counted.total_macs, "params": counted.total_params}


def test_truncation_matches_the_best_low_rank_matrix(rng):
    kernel = rng.normal(size=(3, 3, 4, 6))
    a, b = split_conv_kernel(kernel, 5)
    rebuilt = np.einsum("hcr,wro->hwco", a[:, 0], b[0])
    matrix = kernel.transpose(0, 2, 1, 3).reshape(12, 18)
    s = np.linalg.svd(matrix, compute_uv=False)
    assert np.isclose(np.sum((rebuilt - kernel) ** 2), np.sum(s[5:] ** 2))


def test_meets_target_and_model_trains_and_exports(trained_models, fmnist):
    (x_train, y_train), (x_test, _) = fmnist
    model = trained_models["small_cnn"]
    before = [w.copy() for w in model.get_weights()]
    result = spatial_svd(model, 0.5, data=x_train[:128], config=FEW, verbose=False)
    assert result.mac_ratio <= 0.5 and result.achieved_ratio == result.mac_ratio
    assert result.mac_ratio > 0.25  # the greedy walk-back does not overshoot wildly
    assert result.layer_ratios and set(result.layer_ratios) <= {"conv0", "conv1", "conv2", "logits"}
    assert result.sensitivity.metric == "relative output error" and result.sensitivity.as_rows()
    assert result.original_cost.total_macs == count_macs(model).total_macs
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)
    new = result.model
    assert not {id(v) for v in model.weights} & {id(v) for v in new.weights}
    new.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = new.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    tflite = tflite_export.to_tflite(new, x_train[:64])
    assert tflite_export.count_macs(tflite).total_macs == result.compressed_cost.total_macs
    out = tflite_export.TFLiteModel(tflite).predict(x_test[:32])
    assert np.mean(out.argmax(1) == np.asarray(new(x_test[:32])).argmax(1)) > 0.8


def test_data_free_and_eval_fn_sensitivity(trained_models, fmnist, tmp_path):
    model = trained_models["small_cnn"]
    free = spatial_svd(model, 0.6, config=FEW, verbose=False)
    assert free.sensitivity.metric == "relative weight error" and free.mac_ratio <= 0.6
    calls = []

    def eval_fn(m):
        calls.append(m)
        return -float(np.mean(np.asarray(m(fmnist[1][0][:64])) ** 2))

    params = SpatialSvdConfig(candidate_ratios=(0.5,), layers=("conv1", "conv2"), cost_metric="params")
    result = spatial_svd(model, 0.7, eval_fn=eval_fn, config=params, verbose=False)
    assert len(calls) == 1 + 2  # the baseline, then each layer at its one ratio
    assert result.sensitivity.higher_is_better and result.param_ratio <= 0.7
    assert set(result.layer_ratios) <= {"conv1", "conv2"}
    path = result.sensitivity.plot(tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG" and path


def test_nothing_to_factorize():
    inputs = keras.Input((8, 8, 2))
    x = layers.DepthwiseConv2D(3)(inputs)
    x = layers.Conv2D(4, 1)(x)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    with pytest.raises(NothingToCompressError, match="no layer spatial SVD can factorize"):
        spatial_svd(model, 0.5, verbose=False)
