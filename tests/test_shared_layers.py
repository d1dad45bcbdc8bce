"""A layer called several times (a shared Dense, an encoder model applied to two inputs: a siamese network) keeps
sharing its weights through every rewrite. Each technique used to stop at Keras's "The name ... is used 2 times in
the model"; the quantized model is now full int8 and bit-exact, the calls still share one kernel, also after a
``.keras`` round trip."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
import tflite_export as te
from keras_eff import ptq
from keras_eff.pruning import PruneWrapper
from keras_eff.quantization import QuantizeWrapper, quantization_report


def _shared_dense():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = layers.Dense(16, activation="relu", name="a")(inputs)
    shared = layers.Dense(16, name="shared")
    h = shared(layers.ReLU()(shared(h)))
    return keras.Model(inputs, layers.Dense(4, name="out")(h))


def _siamese():
    keras.utils.set_random_seed(1)
    x = keras.Input((12,))
    encoder = keras.Model(
        x, layers.Dense(8, activation="relu", name="e2")(layers.Dense(16, activation="relu", name="e1")(x)), name="enc"
    )
    a, b = keras.Input((12,), name="a"), keras.Input((12,), name="b")
    distance = ops.abs(layers.Subtract()([encoder(a), encoder(b)]))
    return keras.Model([a, b], layers.Dense(2, name="out")(distance))


def _shared_conv():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((10, 10, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(inputs)
    shared = layers.Conv2D(8, 3, padding="same", name="shared")
    h = shared(layers.ReLU()(shared(h)))
    return keras.Model(inputs, layers.Dense(4, name="out")(layers.GlobalAveragePooling2D()(h)))


RNG = np.random.default_rng(0)
X12 = RNG.normal(size=(128, 12)).astype(np.float32)
DATA = {
    "shared dense": (_shared_dense, X12),
    "siamese": (_siamese, [X12, RNG.normal(size=(128, 12)).astype(np.float32)]),
    "shared conv": (_shared_conv, RNG.normal(size=(64, 10, 10, 3)).astype(np.float32)),
}


def _holders(model, name, cls):
    return [l for l in model._flatten_layers(include_self=False) if isinstance(l, cls) and l.layer.name == name]


@pytest.mark.parametrize("case", list(DATA))
def test_rewrites_keep_one_copy_of_a_layer_called_twice(case):
    build, x = DATA[case]
    model = build()
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(ke.graph.clone(model).predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    equalized = ptq.equalize(model)
    np.testing.assert_allclose(equalized.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)
    assert all(p[0] != "shared" and p[1] != "shared" for p in ke.get_report(equalized, "equalization").pairs)
    pruned = ke.prune_model(model, 0.5, min_weights=0)
    cluster = ke.cluster_model(model, 4)
    if case != "siamese":  # (the encoder is one nested model, rebuilt once)
        assert len(_holders(pruned, "shared", PruneWrapper)) == 1
        assert len(ke.clustering_report(cluster).clustered_layers) == 3
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.zeros_like(expected), epochs=1, verbose=0, callbacks=[ke.callbacks.UpdatePruning()])
    assert ke.sparsity_report(pruned).pruned_sparsity == pytest.approx(0.5, abs=0.02)
    assert ke.sparsity_report(ke.strip(pruned)).total_sparsity == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("case", list(DATA))
def test_quantized_calls_share_the_kernel_and_the_file_is_bit_exact(case, tmp_path):
    build, x = DATA[case]
    model = build()
    q = ke.quantize_model(model)
    name = "e1" if case == "siamese" else "shared"
    wrappers = [l for l in q.layers if isinstance(l, QuantizeWrapper) and l.layer.name == name]
    assert len(wrappers) == 2 and wrappers[0].layer is wrappers[1].layer  # one wrapper per call, one kernel
    assert quantization_report(q).quantized.count(name) == 1 and quantization_report(q).float_layers == []
    ke.calibrate(q, x, progress=False)
    data = te.to_tflite(q)  # full int8 (a float island is refused)
    assert te.compare(q, data, x).max_lsb_diff == 0
    kernel = wrappers[0].layer.kernel
    before = np.asarray(kernel).copy()
    q.compile(keras.optimizers.SGD(0.05), "mse")
    q.fit(x, np.ones_like(model.predict(x, verbose=0)), epochs=1, verbose=0)
    assert not np.array_equal(np.asarray(kernel), before)
    assert te.compare(q, te.to_tflite(q), x).max_lsb_diff == 0
    q.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))
    again = [l for l in loaded.layers if isinstance(l, QuantizeWrapper) and l.layer.name == name]
    assert again[0].layer is again[1].layer  # still one kernel: training the loaded model keeps the calls tied


def test_a_batchnorm_after_one_call_of_a_shared_conv_is_not_folded_into_it():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    h = layers.BatchNormalization(name="bn")(shared(inputs))
    model = keras.Model(inputs, shared(h))
    model.get_layer("bn").set_weights([np.full(3, 2.0, np.float32), np.ones(3, np.float32)] + [np.zeros(3)] * 2)
    x = np.random.default_rng(3).normal(size=(16, 8, 8, 3)).astype(np.float32)
    folded = ke.graph.fold_batchnorm(model)
    assert "bn" in [l.name for l in folded.layers]  # folding into the shared kernel would change the second call
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_adaround_and_bias_correction_leave_a_shared_layer_alone():
    model = _shared_dense()
    q = ke.quantize_model(model)
    ke.calibrate(q, X12, progress=False)
    rounded = ptq.adaround(q, X12, iterations=5)
    report = ke.get_report(rounded, "adaround")
    assert {"a", "out"} <= set(report.layers) and "shared" not in report.layers
    assert any(n == "shared" and "called 2 times" in r for n, r in report.skipped)
    corrected = ptq.bias_correction(q, X12)
    assert te.compare(corrected, te.to_tflite(corrected), X12).max_lsb_diff == 0


def test_a_custom_layer_with_weights_called_twice_stays_float_with_one_set_of_weights():
    """Traced at each call, its weights' copies would train apart (and a constant two MULs read came out 4 LSB off):
    it stays float, reported once, its output on a grid of its own, the two calls on one copy."""
    from test_constant_ops import ChannelAffine

    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    block = ChannelAffine(name="aff")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    h = block(layers.ReLU()(block(h)))
    model = keras.Model(inputs, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(4).normal(size=(32, 8, 8, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="kept 1 layers float"):
        q = ke.quantize_model(model)
    report = quantization_report(q)
    assert report.traced == [] and report.float_layers == [("aff", "ChannelAffine has no quantized implementation")]
    copies = [l for l in q.layers if isinstance(l, ChannelAffine)]
    assert len(copies) == 1 and copies[0] is not block  # one copy, called twice; the user's layer untouched
    ke.calibrate(q, x, progress=False)
    with pytest.raises(te.FloatIslandError, match="aff"):
        te.to_tflite(q)
    assert te.compare(q, te.to_tflite(q, allow_float=True), x).max_lsb_diff <= 1


def test_channel_pruning_leaves_a_shared_layer_and_what_it_reads_dense_naming_why():
    """Its output channels serve every call, and its input channels are those of every call's input: neither can be
    removed (strip(remove_pruned_channels=True) used to stop at a duplicate name)."""
    model = _shared_conv()
    with pytest.raises(ValueError, match=r"shared \(Conv2D\) is called 2 times: its channels serve every call"):
        ke.prune_model(model, 0.5, structure="channels", min_weights=0)
