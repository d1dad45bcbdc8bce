"""Weight clustering: inits, training through the centroids, strip, sparsity, serialization, errors, report."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff
from keras_eff.clustering import (
    INITS,
    ClusterConfig,
    ClusterWrapper,
    cluster,
    cluster_model,
    clustering_report,
    fit_centroids,
)
from keras_eff.strip import strip


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    return x, d.target.astype("int32")


def tiny_model(name="tiny"):
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name=name)


def compiled(model, lr=3e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = compiled(tiny_model())
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    return model


def kernels_of(model):
    return {l.name: np.asarray(l.kernel) for l in model.layers if hasattr(l, "kernel")}


# ---- centroids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", INITS)
def test_each_init_gives_k_centroids_within_the_weight_range(init, rng):
    values = rng.normal(size=600).astype("float32") ** 3
    c = fit_centroids(values, 8, init)
    assert c.shape == (8,) and np.all(np.diff(c) >= 0)
    assert values.min() <= c.min() and c.max() <= values.max()
    assert np.unique(c).size == 8
    if init == "linear":
        np.testing.assert_allclose(c, np.linspace(values.min(), values.max(), 8), rtol=1e-5)
    # through the wrapper: k centroids inside the kernel's range, every weight on one of them
    layer = layers.Dense(20)
    layer.build((None, 30))
    w = np.asarray(layer.kernel)
    wrapper = ClusterWrapper(layer, n_clusters=8, init=init)
    wrapper.build((None, 30))
    centroids = np.asarray(wrapper._centroids["kernel"])
    assert centroids.shape == (8,) and w.min() <= centroids.min() and centroids.max() <= w.max()
    clustered = wrapper.clustered_weights()["kernel"]
    assert set(np.unique(clustered)) <= set(centroids)
    assert np.abs(clustered - w).max() < (w.max() - w.min()) / 2  # nearest, not arbitrary


def test_density_init_follows_the_distribution(rng):
    values = np.concatenate([rng.normal(0, 0.01, 900), rng.normal(0, 1, 100)])
    lin, dens = fit_centroids(values, 8, "linear"), fit_centroids(values, 8, "density")
    near_zero = lambda c: np.sum(np.abs(c) < 0.05)  # noqa: E731
    assert near_zero(dens) > near_zero(lin)


def test_kmeans_on_a_histogram_of_a_large_kernel_fits_as_well_as_on_every_value(rng):
    """Above HISTOGRAM_ABOVE values k-means runs on a weighted histogram: its error is that of k-means on the values
    themselves (within their seed-to-seed spread), at a fraction of the time; with the unweighted variance's
    tolerance it stopped early (4 % worse on a Laplace kernel)."""
    from sklearn.cluster import KMeans

    from keras_eff.clustering import centroids as cl

    values = rng.laplace(0, 0.01, cl.HISTOGRAM_ABOVE + 1).astype("float32")

    def error(c):
        c = np.sort(np.asarray(c, np.float64).reshape(-1))
        return float(np.mean((values - c[cl.nearest(values, c)]) ** 2))

    exact = [
        error(KMeans(16, n_init=1, random_state=s, max_iter=100).fit(values.reshape(-1, 1)).cluster_centers_)
        for s in range(3)
    ]
    histogram = [error(fit_centroids(values, 16, seed=s)) for s in range(3)]
    assert np.mean(histogram) <= np.mean(exact) * 1.01
    assert np.mean(histogram) < error(fit_centroids(values, 16, "linear")) * 0.9


def test_kmeans_beats_linear_on_quantization_error(rng):
    from keras_eff.clustering.centroids import nearest

    values = rng.laplace(size=2000)
    err = {
        i: np.mean((values - fit_centroids(values, 8, i)[nearest(values, fit_centroids(values, 8, i))]) ** 2)
        for i in ("kmeans++", "linear")
    }
    assert err["kmeans++"] < err["linear"]


def test_per_channel_centroids_follow_each_channel():
    layer = layers.Conv2D(4, 3)
    layer.build((None, 6, 6, 3))
    w = np.asarray(layer.kernel) * np.array([1, 10, 100, 1000], "float32")  # very different channel ranges
    layer.kernel.assign(w)
    wrapper = ClusterWrapper(layer, n_clusters=5, per_channel=True)
    wrapper.build((None, 6, 6, 3))
    c = np.asarray(wrapper._centroids["kernel"])
    assert c.shape == (4, 5)
    clustered = wrapper.clustered_weights()["kernel"]
    for ch in range(4):
        assert w[..., ch].min() <= c[ch].min() and c[ch].max() <= w[..., ch].max()
        assert np.unique(clustered[..., ch]).size <= 5


# ---- training and strip -------------------------------------------------------------------------------------------


def test_training_moves_only_the_centroids_and_strip_keeps_k_values(trained, digits):
    x, y = digits
    clustered = compiled(cluster_model(trained, 4, reassign_every=None, skip=("conv",)))
    assert clustering_report(clustered).clustered_layers == ["dw", "hidden", "logits"]
    wrappers = [l for l in clustered.layers if isinstance(l, ClusterWrapper)]
    before = {
        w.name: (np.asarray(w._centroids["kernel"]).copy(), np.asarray(w._indices["kernel"]).copy()) for w in wrappers
    }
    assert trained.get_weights()[0] is not None
    original = [w.copy() for w in trained.get_weights()]
    clustered.fit(x, y, batch_size=64, epochs=1, verbose=0)
    for w in wrappers:
        c0, i0 = before[w.name]
        assert np.abs(np.asarray(w._centroids["kernel"]) - c0).max() > 1e-4  # the gradients reached the centroids
        np.testing.assert_array_equal(np.asarray(w._indices["kernel"]), i0)  # the assignment is kept
        assert not w.layer.kernel.trainable
    for a, b in zip(original, trained.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(a, b)
    plain = strip(clustered)
    assert not any(isinstance(l, ClusterWrapper) for l in plain.layers)
    k = kernels_of(plain)
    for name in ("dw", "hidden", "logits"):
        assert np.unique(k[name]).size <= 4, name
    assert np.unique(k["conv"]).size > 4  # skipped
    np.testing.assert_allclose(plain.predict(x[:64], verbose=0), clustered.predict(x[:64], verbose=0), atol=1e-5)
    report = clustering_report(plain)
    stats = {s.name: s for s in report.kernels}
    assert stats["logits/kernel"].distinct == np.unique(k["logits"]).size
    wrapped = clustering_report(clustered)  # each kernel once: the clustered values, not the wrapped float kernel
    names = [s.name for s in wrapped.kernels]
    assert len(names) == len(set(names)) == len(report.kernels)
    assert {s.name: s.distinct for s in wrapped.kernels} == {s.name: s.distinct for s in report.kernels}


def test_per_channel_clustering_after_training(trained, digits):
    x, y = digits
    clustered = compiled(cluster_model(trained, 3, per_channel=True, init="linear", skip=("dw",)))
    clustered.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0)
    report = clustering_report(strip(clustered))
    stats = {s.name: s for s in report.kernels}
    for name in ("conv/kernel", "hidden/kernel", "logits/kernel"):
        assert stats[name].max_distinct_per_channel <= 3
        assert stats[name].distinct > 3  # channels have their own values


def test_reassignment_moves_weights_between_centroids(trained, digits):
    x, y = digits
    clustered = compiled(cluster_model(trained, 4, reassign_every=2, skip=("conv", "dw")), lr=2e-2)
    w = clustered.get_layer("cluster_hidden")
    i0 = np.asarray(w._indices["kernel"]).copy()
    assert w.layer.kernel.trainable
    clustered.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert int(w.cluster_step.numpy()) == int(np.ceil(len(x) / 64))
    assert np.any(np.asarray(w._indices["kernel"]) != i0)
    plain = strip(clustered)
    assert np.unique(plain.get_layer("hidden").kernel.numpy()).size <= 4
    np.testing.assert_allclose(plain.predict(x[:32], verbose=0), clustered.predict(x[:32], verbose=0), atol=1e-5)


def magnitude_zeroed(model, fraction=0.5, skip=()):
    """A copy of ``model`` with the smallest ``fraction`` of each kernel set to zero (pruning without the pruning
    package)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if hasattr(layer, "kernel") and layer.name not in skip:
            k = np.asarray(layer.kernel)
            layer.kernel.assign(np.where(np.abs(k) <= np.quantile(np.abs(k), fraction), 0.0, k))
    return copy


@pytest.mark.parametrize("per_channel,reassign", [(False, None), (True, 1)])
def test_preserve_sparsity_keeps_zeros(trained, digits, per_channel, reassign):
    x, y = digits
    sparse = magnitude_zeroed(trained)
    zeros = {n: k == 0 for n, k in kernels_of(sparse).items()}
    clustered = compiled(
        cluster_model(
            sparse,
            4,
            per_channel=per_channel,
            preserve_sparsity=True,
            reassign_every=reassign,
            skip=("conv",) if per_channel else (),
        ),
        lr=1e-2,
    )
    clustered.fit(x[:768], y[:768], batch_size=64, epochs=1, verbose=0)
    plain = strip(clustered)
    report = {s.name: s for s in clustering_report(plain).kernels}
    for name, k in kernels_of(plain).items():
        if per_channel and name == "conv":
            continue
        np.testing.assert_array_equal(k == 0, zeros[name], err_msg=name)  # zeros stay zeros, nothing else is zero
        stats = report[f"{name}/kernel"]
        assert (stats.max_distinct_per_channel if per_channel else stats.distinct) <= 4  # zero is one of the 4
    # without preserve_sparsity the zeros are clustered with their neighbours and move
    loose = compiled(cluster_model(sparse, 4, skip=("conv",)), lr=1e-2)
    loose.fit(x[:768], y[:768], batch_size=64, epochs=1, verbose=0)
    assert np.mean(kernels_of(strip(loose))["hidden"] == 0) < 0.5


# ---- serialization ------------------------------------------------------------------------------------------------


def test_keras_round_trip_without_custom_objects(trained, digits, tmp_path):
    x, y = digits
    clustered = compiled(
        cluster_model(
            magnitude_zeroed(trained),
            4,
            per_channel=True,
            preserve_sparsity=True,
            reassign_every=3,
            init="density",
            skip=("conv",),
        )
    )
    clustered.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "clustered.keras"
    clustered.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:64], verbose=0), clustered.predict(x[:64], verbose=0), atol=1e-6)
    w0, w1 = clustered.get_layer("cluster_hidden"), loaded.get_layer("cluster_hidden")
    assert (w1.n_clusters, w1.init, w1.per_channel, w1.preserve_sparsity, w1.reassign_every) == (
        4,
        "density",
        True,
        True,
        3,
    )
    np.testing.assert_array_equal(np.asarray(w1._indices["kernel"]), np.asarray(w0._indices["kernel"]))
    for a, b in zip(strip(loaded).get_weights(), strip(clustered).get_weights()):
        np.testing.assert_array_equal(a, b)
    config = ClusterConfig(8, "linear", overrides={"Dense": {"n_clusters": 4}}, skip=("conv",))
    assert ClusterConfig.from_config(config.get_config()) == config


def test_decorator_in_a_subclassed_model(digits):
    x, y = digits

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat = layers.Flatten()
            self.hidden = cluster(layers.Dense(12, activation="relu"), 4)
            self.out = cluster(layers.Dense(10), 3, init="linear")

        def call(self, inputs):
            return self.out(self.hidden(self.flat(inputs)))

    net = compiled(Net())
    net.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    assert np.unique(net.hidden.clustered_weights()["kernel"]).size <= 4
    assert np.unique(net.out.strip_layer().kernel.numpy()).size <= 3


# ---- bad inputs ---------------------------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors(trained):
    with pytest.raises(ValueError, match=r"n_clusters=1 .*≥ 2"):
        cluster_model(trained, 1)
    with pytest.raises(ValueError, match=r"n_clusters=True"):
        cluster(layers.Dense(4), True)
    with pytest.raises(ValueError, match=r"layer 'logits': n_clusters=200 is larger than the 160 weights"):
        cluster_model(trained, 200, skip=("conv", "dw", "hidden"))
    with pytest.raises(
        ValueError,
        match=r"layer 'conv': n_clusters=10 is larger than the 9 weights of its kernel "
        r"per output channel",
    ):
        cluster_model(trained, 10, per_channel=True)
    with pytest.raises(ValueError, match=r"init='kmeans' is unknown; choose one of 'kmeans\+\+'"):
        cluster_model(trained, 8, init="kmeans")
    with pytest.raises(ValueError, match=r"layer 'x': init='kmean' is unknown"):
        cluster(layers.Dense(4, name="x"), 4, init="kmean")
    with pytest.raises(ValueError, match=r"\['convv'\].*its layers are"):
        cluster_model(trained, 8, skip=("convv",))
    with pytest.raises(ValueError, match=r"layer 'bn' \(BatchNormalization\) has no kernel to cluster"):
        cluster(trained.get_layer("bn"), 4)
    with pytest.raises(ValueError, match=r"reassign_every=0"):
        cluster(layers.Dense(4), 4, reassign_every=0)
    with pytest.raises(ValueError, match=r"still holds pruning or clustering wrappers \(cluster_logits\).*strip"):
        keras_eff.quantize_model(cluster_model(trained, 4, skip=("conv", "dw", "hidden")))
    with pytest.raises(ValueError, match=r"preserve='zeros'.*'sparsity', 'clusters'"):
        keras_eff.quantize_model(trained, preserve="zeros")
    with pytest.raises(TypeError, match="TFLite bytes"):
        clustering_report("model.tflite")
    bad = keras.models.clone_model(trained)
    bad.set_weights(trained.get_weights())
    k = bad.get_layer("hidden").kernel
    k.assign(np.where(np.arange(k.shape[1]) == 0, np.nan, np.asarray(k)))
    with pytest.raises(ValueError, match=r"layer 'hidden' of model .* has NaN.*before clustering it"):
        cluster_model(bad, 4)


def test_quantize_decorator_preserves_zeros_and_shared_values(rng):
    import tensorflow as tf

    layer = layers.Dense(6)
    layer.build((None, 10))
    values = rng.choice(np.array([-0.5, -0.1, 0.0, 0.2, 0.7], "float32"), size=(10, 6))
    layer.kernel.assign(values)
    wrapper = keras_eff.quantize(layer, per_channel=False, preserve=("sparsity", "clusters"))
    x = rng.normal(size=(16, 10)).astype("float32")
    wrapper(x)
    assert wrapper.n_centroids == {"kernel": 4}  # the non-zero values; zero is held by the mask
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(wrapper(x, training=True) ** 2)
        variables = wrapper.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    assert all(v is not layer.kernel for v in variables)  # the centroids train instead
    kernel = np.asarray(wrapper.folded_kernels()[0]["kernel"])
    np.testing.assert_array_equal(kernel == 0, values == 0)
    assert np.unique(kernel[kernel != 0]).size <= 4
    assert not np.allclose(np.unique(kernel[kernel != 0]), [-0.5, -0.1, 0.2, 0.7])  # the shared values moved
    quantized = np.asarray(wrapper.quantized_kernels()[0]["kernel"])
    assert np.unique(quantized).size <= 5 and np.all(quantized[values == 0] == 0)
