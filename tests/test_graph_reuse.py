"""Graph rewrites reuse stateless layers (a Lambda included) instead of cloning them through their config, copy every
layer that holds state, never change the user's model; refusals of models a technique has already rewritten."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import quantization_report


def _lambda_model(seed=0, traceable=True):
    """conv → Lambda halving → flatten → dense → dense. ``traceable=False``: the Lambda calls TensorFlow, which
    refuses Keras's symbolic tensors, so quantize_model cannot trace it into Keras ops."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    # (the import inside: a Lambda loaded from a file sees none of this module's names)
    half = (lambda t: t * 0.5) if traceable else (lambda t: __import__("tensorflow").multiply(t, 0.5))
    x = layers.Lambda(half, output_shape=(6, 6, 8), name="half")(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(16, activation="relu", name="fc1")(x)
    return keras.Model(inputs, layers.Dense(3, name="fc2")(x), name="with_lambda")


def _snapshot(model):
    return (
        [w.copy() for w in model.get_weights()],
        [l.get_config() for l in model.layers],
        [id(l) for l in model.layers],
        model.get_config(),
    )


def _assert_unchanged(model, snap, x, y_before):
    weights, configs, ids, config = snap
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [l.get_config() for l in model.layers] == configs
    assert [id(l) for l in model.layers] == ids
    assert model.get_config() == config
    np.testing.assert_array_equal(np.asarray(model(x)), y_before)


def _assert_shares_no_variable(old, new):
    assert not {id(v) for v in old.variables} & {id(v) for v in new.variables}


@pytest.fixture
def x(rng):
    return rng.random((64, 8, 8, 1), dtype=np.float32)


def test_graph_clone_reuses_a_lambda_and_copies_layers_with_state(x):
    model = _lambda_model()
    snap, y = _snapshot(model), np.asarray(model(x))
    copy = ke.graph.clone(model)
    np.testing.assert_allclose(np.asarray(copy(x)), y, rtol=1e-6, atol=1e-6)
    assert copy.get_layer("half") is model.get_layer("half")
    assert copy.get_layer("flat") is model.get_layer("flat")
    for name in ("conv", "fc1", "fc2"):
        assert copy.get_layer(name) is not model.get_layer(name)
    _assert_shares_no_variable(model, copy)
    # training the copy leaves the user's model as it was
    copy.compile(optimizer="sgd", loss="mse")
    copy.fit(x, np.ones((64, 3), np.float32), epochs=1, batch_size=32, verbose=0)
    _assert_unchanged(model, snap, x, y)


def test_layers_with_state_are_still_copied(x):
    """Dropout, GaussianNoise (seed generators), BatchNormalization and an adapted Normalization (statistics) hold
    variables: each is copied, not shared; a Rescaling holds none and is shared."""
    keras.utils.set_random_seed(0)
    norm = layers.Normalization(name="norm")
    norm.adapt(x)
    inputs = keras.Input((8, 8, 1))
    h = norm(inputs)
    h = layers.Rescaling(2.0, name="scale")(h)
    h = layers.Conv2D(4, 3, name="conv")(h)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.GaussianNoise(0.1, name="noise")(h)
    h = layers.Dropout(0.3, name="drop")(h)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D(name="gap")(h))
    copy = ke.graph.clone(model)
    for name in ("norm", "conv", "bn", "noise", "drop"):
        assert copy.get_layer(name) is not model.get_layer(name), name
    for name in ("scale", "gap"):
        assert copy.get_layer(name) is model.get_layer(name), name
    _assert_shares_no_variable(model, copy)
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_lambda_model_is_quantized_as_its_keras_ops_and_exported_bit_exact(x, tmp_path):
    model = _lambda_model()
    snap, y = _snapshot(model), np.asarray(model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing kept float: no warning
        q = ke.quantize_model(model)
    report = quantization_report(q)
    assert report.float_layers == [] and report.traced == ["half"]
    assert set(report.quantized) == {"conv", "fc1", "fc2"}
    assert not any(isinstance(l, layers.Lambda) for l in q.layers)  # its function traced: a MUL and its range
    _assert_shares_no_variable(model, q)

    with pytest.raises(te.UncalibratedModelError, match="pixels_input_range"):
        te.to_tflite(q)
    ke.calibrate(q, x, progress=False)
    data = te.to_tflite(q)  # the MUL has its range: no representative data needed
    assert te.find_float_islands(data) == []
    assert te.compare(q, data, x).max_lsb_diff == 0
    q.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")  # no Lambda left: Keras's safe mode loads it
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(q(x)))
    _assert_unchanged(model, snap, x, y)


def test_an_untraceable_lambda_stays_float_with_a_range_on_its_output(x):
    """The converter folds a constant multiply into the next convolution's fake-quant kernel, where the int8 codes
    saturate (84–96 LSB off before the Lambda's output had a range); with its range the file computes the MUL on the
    grids the simulation reads."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    h = layers.Lambda(lambda t: tf.multiply(t, 2.0), output_shape=(6, 6, 8), name="double")(h)
    h = layers.Conv2D(4, 3, name="conv2")(h)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(layers.Flatten()(h)))
    with pytest.warns(UserWarning, match=r"Lambda \(double\)"):
        q = ke.quantize_model(model)
    report = quantization_report(q)
    assert report.float_layers == [("double", "Lambda has no quantized implementation")] and report.traced == []
    assert q.get_layer("double") is model.get_layer("double")  # reused: no config round trip
    assert q.get_layer("double_output_range").after_float
    ke.calibrate(q, x, progress=False)
    data = te.to_tflite(q)
    assert te.find_float_islands(data) == []
    assert te.compare(q, data, x).max_lsb_diff == 0


def test_lambda_model_is_pruned_and_stripped(x, rng):
    model = _lambda_model()
    snap, y = _snapshot(model), np.asarray(model(x))
    pruned = ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0, frequency=1), min_weights=0)
    assert pruned.get_layer("half") is model.get_layer("half")
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pruned.fit(
        x,
        rng.normal(size=(64, 3)).astype(np.float32),
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[ke.callbacks.UpdatePruning()],
    )
    sparse = ke.strip(pruned)
    assert sparse.get_layer("half") is model.get_layer("half")
    for name in ("conv", "fc1", "fc2"):
        kernel = sparse.get_layer(name).get_weights()[0]
        assert 0.4 <= np.mean(kernel == 0) <= 0.6, name
    np.testing.assert_allclose(np.asarray(sparse(x)), np.asarray(pruned(x)), rtol=1e-5, atol=1e-5)
    _assert_unchanged(model, snap, x, y)


def test_lambda_model_is_clustered_and_stripped(x):
    model = _lambda_model()
    snap, y = _snapshot(model), np.asarray(model(x))
    clustered = ke.cluster_model(model, 4)
    assert clustered.get_layer("half") is model.get_layer("half")
    plain = ke.strip(clustered)
    assert plain.get_layer("half") is model.get_layer("half")
    for name in ("conv", "fc1", "fc2"):
        assert len(np.unique(plain.get_layer(name).get_weights()[0])) <= 4, name
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(clustered(x)), rtol=1e-5, atol=1e-5)
    _assert_unchanged(model, snap, x, y)


def test_lambda_model_is_equalized(x):
    model = _lambda_model()
    snap, y = _snapshot(model), np.asarray(model(x))
    equalized = ke.ptq.equalize(model)
    assert equalized.get_layer("half") is model.get_layer("half")
    np.testing.assert_allclose(np.asarray(equalized(x)), y, rtol=1e-4, atol=1e-5)
    _assert_unchanged(model, snap, x, y)


def test_saving_a_model_with_a_lambda_stays_the_users_choice(x, tmp_path):
    """Nothing here turns Keras's safe mode off: loading a Lambda needs safe_mode=False from the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(_lambda_model(traceable=False))
    ke.calibrate(q, x, progress=False)
    q.save(tmp_path / "q.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras", safe_mode=False)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(q(x)), rtol=1e-5, atol=1e-5)
    assert te.find_unset_ranges(loaded) == []


def test_each_unknown_class_is_warned_about_once():
    inputs = keras.Input((6, 4))
    x = layers.UnitNormalization(name="norm_a")(inputs)
    x = layers.Lambda(lambda t: tf.add(t, 1.0), output_shape=(6, 4), name="lam_a")(x)
    x = layers.UnitNormalization(name="norm_b")(x)
    x = layers.Lambda(lambda t: tf.multiply(t, 2.0), output_shape=(6, 4), name="lam_b")(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = ke.quantize_model(model, ke.QuantConfig(skip=("fc",)))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    text = messages[0]
    assert "kept 5 layers float" in text
    assert text.count("UnitNormalization") == 1 and "UnitNormalization (norm_a, norm_b)" in text
    assert text.count("Lambda") == 1 and "Lambda (lam_a, lam_b)" in text
    assert "QuantConfig(skip=" in text and "Skipped by QuantConfig: fc" in text
    assert len(quantization_report(q).float_layers) == 5  # the report still lists every layer
    # skipping every layer quantize_model cannot handle silences the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ke.quantize_model(model, ke.QuantConfig(skip=("norm_a", "norm_b", "lam_a", "lam_b")))


def test_requantizing_a_quantized_model_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(_lambda_model())
    with pytest.raises(
        ValueError,
        match=r"'with_lambda' is already quantized \(it holds pixels_input_range, "
        r"quant_conv.*call quantize_model on the float model",
    ):
        ke.quantize_model(q)


def test_pruning_or_clustering_a_rewritten_model_is_refused_with_advice():
    model = _lambda_model()
    pruned = ke.prune_model(model, 0.5, min_weights=0)
    clustered = ke.cluster_model(model, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = ke.quantize_model(model)
    strip_first = r"holds keras-eff wrappers .*\((prune|cluster)_conv, .*call keras_eff.strip\(model\) first"
    with pytest.raises(ValueError, match=strip_first + ", then prune"):
        ke.prune_model(pruned, 0.5, min_weights=0)
    with pytest.raises(ValueError, match=strip_first + ", then prune"):
        ke.prune_model(clustered, 0.5, min_weights=0)
    with pytest.raises(ValueError, match=strip_first + ", then cluster"):
        ke.cluster_model(clustered, 4)
    with pytest.raises(ValueError, match=strip_first + ", then cluster.*preserve_sparsity=True"):
        ke.cluster_model(pruned, 4)
    with pytest.raises(ValueError, match=r"is quantized.*prune the float model.*preserve='sparsity'"):
        ke.prune_model(quantized, 0.5, min_weights=0)
    with pytest.raises(ValueError, match=r"is quantized.*cluster the float model.*preserve='clusters'"):
        ke.cluster_model(quantized, 4)
    # the supported chain still works: strip, then the next technique
    again = ke.cluster_model(ke.strip(pruned), 4, preserve_sparsity=True)
    assert again.get_layer("half") is model.get_layer("half")


def test_released_candidates_do_not_stay_alive_with_the_users_model(x, tmp_path):
    """A shared layer records every model built on it; graph.release unhooks a discarded one (the loops of mixed
    precision and compression do), while a model still in use keeps working and saving."""
    import gc
    import weakref

    model = _lambda_model()
    half = model.get_layer("half")
    kept = ke.graph.clone(model)
    alive = []
    for _ in range(3):
        candidate = ke.graph.clone(model)
        candidate(x[:2])
        alive.append(weakref.ref(candidate.get_layer("fc1")))
        ke.graph.release(candidate)
        del candidate
    gc.collect()
    assert [r() for r in alive] == [None, None, None]
    assert len(half._inbound_nodes) == 2  # the user's model and the one kept
    unreleased = weakref.ref(ke.graph.clone(model).get_layer("fc1"))
    gc.collect()
    assert unreleased() is not None  # what release is for: the shared Lambda holds it
    kept.save(tmp_path / "kept.keras")
    loaded = keras.saving.load_model(tmp_path / "kept.keras", safe_mode=False)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_graph_analyses_count_only_their_own_calls_of_a_shared_layer():
    """A stateless layer reused by other models has more Keras nodes than calls in this graph: the channel groups
    of channel pruning and the targets of spatial SVD must not see it as shared."""
    from keras_eff.compression.channel_groups import find_groups
    from keras_eff.compression.config import SpatialSvdConfig
    from keras_eff.compression.svd import SpatialSvdScheme
    from keras_eff.models import small_cnn

    model = small_cnn(width=8)
    groups = find_groups(model)
    targets = set(SpatialSvdScheme(model, SpatialSvdConfig()).targets)
    assert groups and targets
    copies = [ke.graph.clone(model) for _ in range(2)]  # noqa: F841 (alive: their nodes stay on the shared layers)
    assert len(model.get_layer("pool0")._inbound_nodes) == 3
    assert find_groups(model) == groups
    assert set(SpatialSvdScheme(model, SpatialSvdConfig()).targets) == targets
    info = ke.graph.GraphInfo.of(model)
    assert info.calls(model.get_layer("pool0")) == 1


class _Scale(layers.Layer):
    """A stateless custom layer whose constructor argument its config does not hold: it cannot be rebuilt from it."""

    def __init__(self, factor):
        super().__init__(name="scale")
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {"name": self.name}


class _Bias(_Scale):
    def build(self, shape):
        self.b = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.factor + self.b


def test_a_custom_layer_is_reused_and_a_stateful_one_needs_a_config():
    def build(layer):
        return keras.Sequential([keras.Input((4,)), layers.Dense(4, name="d1"), layer, layers.Dense(2, name="d2")])

    model = build(_Scale(2.0))
    assert ke.graph.clone(model).get_layer("scale") is model.get_layer("scale")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = ke.quantize_model(model)  # stateless: traced into its Keras ops, its factor a constant of the graph
    assert quantization_report(q).traced == ["scale"]
    with pytest.raises(
        ke.errors.UnsupportedModelError,
        match=r"(?s)layer 'scale' \(_Bias\) holds variables.*"
        r"get_config\(\) returning its constructor's",
    ):
        ke.graph.clone(build(_Bias(2.0)))


def test_a_lambda_inside_a_nested_model_is_reused(rng):
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Lambda(lambda t: tf.add(t, 1.0), output_shape=(4,), name="shift"),
            layers.Dense(4, name="inner_fc"),
        ],
        name="inner",
    )
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="fc")(inner(inputs)))
    with pytest.warns(UserWarning, match=r"Lambda \(shift\)"):
        q = ke.quantize_model(model)
    assert q.get_layer("inner").get_layer("shift") is inner.get_layer("shift")
    x = rng.random((16, 4), dtype=np.float32)
    ke.calibrate(q, x, progress=False)
    np.testing.assert_allclose(np.asarray(q(x)), np.asarray(model(x)), atol=0.05)


def test_lambda_model_goes_through_ptq_and_compression(rng):
    """auto_quant (quantize + calibrate), bias correction, spatial SVD and channel pruning on a model with a Lambda:
    each result calls the user's Lambda, and the user's model is unchanged."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    h = layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    h = layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = layers.Lambda(lambda t: t * 0.5, name="half")(h)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(layers.Flatten()(h)))
    x = rng.random((64, 12, 12, 1), dtype=np.float32)
    snap, y = _snapshot(model), np.asarray(model(x))
    half = model.get_layer("half")

    def agreement(m):
        return float(np.mean(np.argmax(np.asarray(m(x)), 1) == np.argmax(y, 1)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = ke.ptq.auto_quant(model, x, agreement, 0.2, report_path=None, progress=False)
        q = ke.quantize_model(model)
        ke.calibrate(q, x, progress=False)
        corrected = ke.ptq.bias_correction(q, x)
    for quantized in (auto.model, corrected):  # quantized as its Keras op
        assert quantization_report(quantized).traced == ["half"]
    assert te.find_unset_ranges(auto.model) == []
    svd = ke.compression.spatial_svd(model, 0.8, x, verbose=False)
    pruned = ke.compression.channel_pruning(model, 0.8, x, verbose=False)
    for result in (svd, pruned):
        assert result.model.get_layer("half") is half
        assert result.mac_ratio <= 0.85
    _assert_unchanged(model, snap, x, y)


def test_quantizing_a_model_twice_places_the_second_models_ranges_from_its_own_graph():
    """A stateless layer (this MaxPooling2D) is shared by the user's model and every model quantized from it, and its
    ``_outbound_nodes`` list the calls of all of them: placing the second quantized model's ranges, the conv before
    it found two Concatenates to leave its output to, placed none, and the file computed that conv in float (a
    second quantize_model of InceptionV3 and DenseNet121 in one process)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    a = layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = layers.Conv2D(8, 1, name="b")(inputs)
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name="pool")(a)
    h = layers.Concatenate(name="concat")([pooled, b])
    model = keras.Model(inputs, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).normal(size=(32, 12, 12, 3)).astype(np.float32)
    placed = []
    for _ in range(2):
        q = ke.quantize_model(model)
        ke.calibrate(q, x, progress=False)
        conv = q.get_layer("quant_a")
        assert conv.output_quantizer is None  # its output lies on a consumer's grid ...
        placed.append(conv._output_range.name if conv._output_range is not None else None)
        data = te.to_tflite(q)  # a float island is refused
        assert te.compare(q, data, x).max_lsb_diff == 0
    assert placed[0] is not None and placed == [placed[0]] * 2  # ... found again in the second model's own graph
