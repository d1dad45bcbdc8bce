"""prune → cluster → QAT: what each `preserve` setting promises, checked on the weights of the int8 TFLite file."""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff
import tflite_export as te
from keras_eff.clustering import cluster_model, clustering_report
from keras_eff.quantization import QuantConfig, QuantizeWrapper, quantization_report
from keras_eff.strip import strip

pytestmark = pytest.mark.slow  # end to end: train, prune, cluster, QAT, convert

K = 4
FILTER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target.astype("int32")


def compiled(model, lr=3e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def chain_model():
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="chain")


def pruned_and_clustered(digits, per_channel):
    """Trained, 50% of every kernel zeroed by magnitude (the pruning step), clustered to K values keeping the
    zeros, fine-tuned, stripped: a plain model."""
    x, y = digits
    keras.utils.set_random_seed(0)
    model = compiled(chain_model())
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            k = np.asarray(layer.kernel)
            layer.kernel.assign(np.where(np.abs(k) <= np.median(np.abs(k)), 0.0, k))
    clustered = compiled(cluster_model(model, K, per_channel=per_channel, preserve_sparsity=True))
    clustered.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return strip(clustered)


@pytest.fixture(scope="module")
def chain(digits):
    return pruned_and_clustered(digits, per_channel=False)


def tflite_layout(layer, kernel):
    """A Keras kernel in the layout of the TFLite filter tensor (output channel first, or last for depthwise)."""
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, cin, m = kernel.shape
        return kernel.reshape(1, kh, kw, cin * m)
    if isinstance(layer, layers.Dense):
        return kernel.T
    return np.transpose(kernel, (3, 0, 1, 2))


def int8_filters(data):
    """{layer name: (op name, int8 filter)} read from the file with the LiteRT interpreter."""
    graph = te.read_graph(data)
    interpreter = te.make_interpreter(data, use_xnnpack=False)
    out = {}
    for op in graph.ops:
        if op.name not in FILTER_OPS:
            continue
        t = graph.tensors[op.inputs[1]]
        assert t.dtype == np.int8 and t.is_constant
        part = next(p for p in t.name.replace(";", "/").split("/") if p.startswith("quant_"))
        name = re.sub(r"_\d+$", "", part[len("quant_") :])  # TensorFlow's name scopes add "_1"
        out[name] = (op.name, interpreter.get_tensor(t.index))
    return out


def per_channel_distinct(op, values):
    axis = 3 if op == "DEPTHWISE_CONV_2D" else 0
    v = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    return max(np.unique(row).size for row in v)


@pytest.mark.parametrize("preserve", ["sparsity", "clusters", ("sparsity", "clusters")])
def test_qat_keeps_what_it_preserves_in_the_int8_file(chain, digits, preserve, tmp_path):
    x, y = digits
    kernels = {l.name: np.asarray(l.kernel) for l in chain.layers if hasattr(l, "kernel")}
    assert all(np.mean(k == 0) >= 0.5 for k in kernels.values())
    assert all(np.unique(k).size <= K for k in kernels.values())
    qat = compiled(keras_eff.quantize_model(chain, preserve=preserve), lr=1e-2)
    assert {n for n, _ in quantization_report(qat).preserved} == set(kernels)
    qat.fit(x, y, batch_size=64, epochs=1, verbose=0)
    filters = int8_filters(te.to_tflite(qat))
    assert set(filters) == set(kernels)
    keeps_zeros = "sparsity" in preserve
    keeps_clusters = "clusters" in preserve
    for name, (op, q) in filters.items():
        zeros = tflite_layout(chain.get_layer(name), kernels[name]) == 0
        if keeps_zeros:
            assert np.all(q[zeros] == 0), name  # every pruned weight is an int8 zero
        if keeps_clusters:
            # conv and depthwise: per-channel scales (and BN folded into conv): ≤ K per output channel;
            # Dense: one scale and nothing folded: ≤ K in the whole kernel
            assert per_channel_distinct(op, q) <= K, name
            if op == "FULLY_CONNECTED":
                assert np.unique(q).size <= K, name
    if not keeps_clusters:  # training without the centroids spreads the values
        assert np.unique(filters["hidden"][1]).size > K
    if not keeps_zeros:  # the zero centroid of each kernel trains away from zero
        assert np.mean(filters["hidden"][1] == 0) < 0.5
    if preserve == ("sparsity", "clusters"):
        path = tmp_path / "qat.keras"
        qat.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded.predict(x[:64], verbose=0), qat.predict(x[:64], verbose=0), atol=1e-5)
        wrapper = loaded.get_layer("quant_hidden")
        assert isinstance(wrapper, QuantizeWrapper) and wrapper.preserve == ("sparsity", "clusters")
        report = clustering_report(te.to_tflite(loaded))
        assert report.sparsity >= 0.45 and report.gzip_bytes < report.size_bytes


def test_per_channel_clusters_stay_per_channel_in_int8(digits):
    x, y = digits
    plain = pruned_and_clustered(digits, per_channel=True)
    report = {s.name: s for s in clustering_report(plain).kernels}
    assert report["hidden/kernel"].max_distinct_per_channel <= K < report["hidden/kernel"].distinct
    qat = compiled(keras_eff.quantize_model(plain, QuantConfig(preserve=("sparsity", "clusters"))), lr=1e-2)
    qat.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0)
    for name, (op, q) in int8_filters(te.to_tflite(qat)).items():
        assert per_channel_distinct(op, q) <= K, name
        assert np.mean(q == 0) >= 0.5, name


def test_preserve_in_config_overrides_and_round_trip(chain):
    config = QuantConfig(preserve="clusters", overrides={"logits": {"preserve": ()}})
    assert QuantConfig.from_config(config.get_config()) == config
    qat = keras_eff.quantize_model(chain, config)
    assert qat.get_layer("quant_hidden").preserve == ("clusters",)
    assert qat.get_layer("quant_logits").preserve == ()
    assert "logits" not in {n for n, _ in quantization_report(qat).preserved}
    # the argument wins over the config
    assert keras_eff.quantize_model(chain, config, preserve=()).get_layer("quant_hidden").preserve == ()
