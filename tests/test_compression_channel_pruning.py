import keras
import numpy as np
import pytest
from keras import layers

import tflite_export
from keras_eff.compression import ChannelPruningConfig, NothingToCompressError, channel_pruning, count_macs, find_groups
from keras_eff.compression.channel_pruning import ChannelPruningScheme
from keras_eff.compression.pipeline import output_error, predict
from keras_eff.compression.reconstruction import channel_gram, conv_patches, removal_order, sample_positions
from keras_eff.models import ZOO

FEW = dict(candidate_ratios=(0.75, 0.5, 0.25), num_reconstruction_samples=2000, samples_per_image=10)


def test_groups_follow_per_channel_paths_only():
    groups = {name: {g.consumer: g for g in find_groups(ZOO[name](width=8))} for name in ZOO}
    small = groups["small_cnn"]
    assert set(small) == {"conv1", "conv2", "logits"}
    assert small["conv1"].producer == "conv0" and small["conv1"].channelwise == ["bn0"]
    assert small["logits"].producer == "conv2" and small["logits"].channels == 32
    ds = groups["ds_cnn"]["pw0"]  # through BN, ReLU6 and a depthwise conv back to the stem
    assert ds.producer == "stem" and ds.channelwise == ["stem_bn", "dw0", "dw0_bn"]
    # residual adds and concatenations pin their channels: only the inner conv of each block is free
    assert set(groups["residual_cnn"]) == {"res0_conv2", "res1_conv2"}
    assert set(groups["concat_cnn"]) == {"logits"}  # Dense after Dense; Flatten and the branches stop the rest


def test_patches_match_the_convolution(rng):
    conv = layers.Conv2D(3, (3, 2), strides=(2, 1), dilation_rate=1, padding="same")
    x = rng.normal(size=(2, 7, 6, 4)).astype("float32")
    y = np.asarray(conv(x))
    positions = sample_positions(2, y.shape[1], y.shape[2], 5, rng)
    patches = conv_patches(x, conv, positions)
    expected = y[positions[0], positions[1], positions[2]]
    kernel, bias = (np.asarray(w) for w in conv.weights)
    np.testing.assert_allclose(patches @ kernel.reshape(-1, 3) + bias, expected, rtol=1e-4, atol=1e-5)


def test_greedy_order_drops_the_channel_contributing_least(rng):
    patches = rng.normal(size=(200, 4))
    patches[:, 2] *= 0.01  # channel 2 barely moves the output
    kernel = rng.normal(size=(4, 3))
    order = removal_order(channel_gram(patches, kernel, 4))
    assert order[0] == 2 and sorted(order) == sorted(set(order)) and len(order) == 3


@pytest.fixture(scope="module")
def small(trained_models):
    return trained_models["small_cnn"]


def test_reconstruction_lowers_output_error(small, fmnist):
    (x_train, _), (x_test, _) = fmnist
    reference = predict(small, x_test[:300])
    errors = {}
    for reconstruct in (False, True):
        params = ChannelPruningConfig(reconstruct=reconstruct, **FEW)
        scheme = ChannelPruningScheme(small, params, x_train)
        settings = {"conv1": 4, "conv2": 8}
        model = scheme.build(settings, final=True)
        assert model.get_layer("conv0").kernel.shape[-1] == 4 and model.get_layer("bn0").gamma.shape == (4,)
        assert model.get_layer("conv2").kernel.shape == (3, 3, 8, 32)
        assert model.get_layer("conv1").kernel.shape == (3, 3, 4, 8)
        counted = count_macs(model)
        assert scheme.cost_of(settings) == {"macs": counted.total_macs, "params": counted.total_params}
        errors[reconstruct] = output_error(model, x_test[:300], reference)  # held-out images
    assert errors[True] < 0.3 * errors[False]  # about 25x lower on trained models


def test_meets_target_trains_and_exports(small, fmnist, tmp_path):
    (x_train, y_train), (x_test, _) = fmnist
    before = [w.copy() for w in small.get_weights()]
    result = channel_pruning(small, 0.5, (x_train, y_train), config=ChannelPruningConfig(**FEW), verbose=False)
    assert 0.25 < result.mac_ratio <= 0.5 and result.layer_ratios
    assert all(isinstance(k, int) for k in result.layer_settings.values())
    for a, b in zip(before, small.get_weights()):
        np.testing.assert_array_equal(a, b)
    new = result.model
    new.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(new.fit(x_train[:256], y_train[:256], epochs=1, verbose=0).history["loss"][0])
    new.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(loaded(x_test[:8]), new(x_test[:8]), rtol=1e-5, atol=1e-5)
    tflite = tflite_export.to_tflite(new, x_train[:64])
    assert tflite_export.count_macs(tflite).total_macs == result.compressed_cost.total_macs


def test_bias_free_consumer_moves_intercept_into_batchnorm(rng):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = layers.ReLU()(x)
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="b")(x)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    data = rng.random((60, 8, 8, 3)).astype("float32")
    scheme = ChannelPruningScheme(model, ChannelPruningConfig(num_reconstruction_samples=600), data)
    pruned = scheme.build({"b": 4}, final=True)
    assert not np.allclose(np.asarray(pruned.get_layer("bn").moving_mean), 0.0)
    assert output_error(pruned, data, predict(model, data)) < 0.5


def test_needs_data_and_a_prunable_layer(small, fmnist):
    with pytest.raises(ValueError, match="needs data"):
        channel_pruning(small, 0.5, None)
    with pytest.raises(ValueError, match="empty"):
        channel_pruning(small, 0.5, fmnist[0][0][:0])
    with pytest.raises(ValueError, match=r"expects \(n, 28, 28, 1\)"):
        channel_pruning(small, 0.5, np.zeros((4, 28, 28, 3), "float32"))
    model = ZOO["residual_cnn"](width=4)
    with pytest.raises(NothingToCompressError, match="input channels can be pruned"):
        channel_pruning(
            model,
            0.5,
            fmnist[0][0][:32],
            config=ChannelPruningConfig(exclude=("res0_conv2", "res1_conv2")),
            verbose=False,
        )
