"""AdaRound: the loss falls, kernels land exactly on the WeightQuantizer's grid, and the int8 file keeps them."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff import ptq
from keras_eff.ptq import common
from keras_eff.quantization import layer_ops


def _model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 10, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU(6.0, name="dw_relu6")(x)
    x = layers.Conv2D(8, 1, activation="relu", name="pw")(x)
    x = layers.Flatten(name="flat")(x)
    out = layers.Dense(6, name="logits")(x)
    return keras.Model(inp, out, name="ada")


@pytest.fixture(scope="module")
def rounded():
    x = np.random.default_rng(0).uniform(0, 1, (128, 10, 10, 1)).astype("float32")
    model = _model()
    q = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q, x, progress=False)
    nearest = {w.layer.name: np.asarray(w.quantized_kernels()[0]["kernel"]) for w in common.quantized_layers(q)}
    floats = {w.layer.name: np.asarray(w.layer.kernel).copy() for w in common.quantized_layers(q)}
    q = ptq.adaround(q, x, iterations=150, batch_size=32)
    return model, q, x, nearest, floats


def test_adaround_loss_falls(rounded):
    _, q, _, _, _ = rounded
    rep = ke.get_report(q, "adaround")
    assert set(rep.layers) == {"conv", "dw", "pw", "logits"}
    for name, r in rep.layers.items():
        assert r["mse_adaround"] < r["mse_nearest"], name
        regularized = [c[3] for c in r["curve"] if c[0] >= r["warm_start"]]
        assert regularized[-1] < 0.5 * regularized[0], name  # the loss fell while β was annealed
        assert 0 < r["flipped"] < 0.5


def test_adaround_output_closer_to_float(rounded):
    model, q, x, _, _ = rounded
    ref = model(x).numpy()
    q_near = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q_near, x, progress=False)
    assert np.mean(np.square(q(x).numpy() - ref)) < np.mean(np.square(q_near(x).numpy() - ref))


def test_adaround_kernels_on_grid_and_within_one_step(rounded):
    _, q, _, nearest, floats = rounded
    for w in common.quantized_layers(q):
        k = np.asarray(w.layer.kernel)
        qk = np.asarray(w.quantized_kernels()[0]["kernel"])
        np.testing.assert_array_equal(qk.reshape(k.shape), k)  # re-quantizing is the identity
        cl = np.asarray(layer_ops.to_channels_last(w.layer, "kernel", k))
        s = np.asarray(w.weight_quantizer.scale(cl))
        ints = cl / s
        np.testing.assert_allclose(ints, np.round(ints), atol=1e-4)
        assert np.abs(np.round(ints)).max() <= 7  # 4-bit narrow range
        # the scale did not move: the grid is the nearest rounding's grid
        s_near = np.asarray(
            w.weight_quantizer.scale(layer_ops.to_channels_last(w.layer, "kernel", floats[w.layer.name]))
        )
        np.testing.assert_allclose(s, s_near, rtol=1e-6)
        # each weight went down or up from its float value: at most one step from it
        f = np.asarray(layer_ops.to_channels_last(w.layer, "kernel", floats[w.layer.name]))
        assert np.all(np.abs(cl - f) <= s * (1 + 1e-4))
        assert not np.array_equal(k, nearest[w.layer.name])


def test_adaround_integers_survive_int8_export(rounded):
    _, q, _, _, _ = rounded
    data = te.to_tflite(q)
    graph = te.read_graph(data)
    interp = te.make_interpreter(data, use_xnnpack=False)
    wrappers = {w.name: w for w in common.quantized_layers(q)}
    seen = set()
    for op in graph.ops:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        info = graph.tensors[op.inputs[1]]
        w = next(w for n, w in wrappers.items() if f"/{n}_" in info.name or f"/{n}/" in info.name)
        ints = interp.get_tensor(info.index).astype(np.float64)
        cl = np.asarray(layer_ops.to_channels_last(w.layer, "kernel", w.layer.kernel), np.float64)
        if op.name == "CONV_2D":  # (out, kh, kw, in)
            ints = np.transpose(ints, (1, 2, 3, 0))
        elif op.name == "DEPTHWISE_CONV_2D":  # (1, kh, kw, c)
            ints = np.transpose(ints, (1, 2, 0, 3))
        else:  # (out, in)
            ints = ints.T
        scale = np.asarray(w.weight_quantizer.scale(cl.astype(np.float32)), np.float64)
        np.testing.assert_array_equal(ints, np.round(cl / scale))
        np.testing.assert_allclose(info.scales, np.atleast_1d(scale), rtol=1e-6)
        np.testing.assert_allclose(
            ints * info.scales.reshape(scale.shape if scale.ndim else ()), cl, rtol=1e-6, atol=1e-9
        )
        seen.add(w.layer.name)
    assert seen == {"conv", "dw", "pw", "logits"}


def test_adaround_weight_bits_override_and_per_tensor():
    x = np.random.default_rng(1).uniform(0, 1, (64, 10, 10, 1)).astype("float32")
    q = ke.quantize_model(_model(), ke.QuantConfig(weight_granularity="per_tensor"))
    ke.calibrate(q, x, progress=False)
    q = ptq.adaround(q, x, ptq.AdaRoundConfig(iterations=30, weight_bits=3, layers=("pw", "logits")))
    assert set(ke.get_report(q, "adaround").layers) == {"pw", "logits"}
    for w in common.quantized_layers(q, ("pw", "logits")):
        assert w.weight_bits == 3 and not w.weight_quantizer.per_channel
        k = np.asarray(w.layer.kernel)
        s = float(np.asarray(w.weight_quantizer.scale(k)))
        assert np.abs(np.round(k / s)).max() <= 3
        np.testing.assert_allclose(k / s, np.round(k / s), atol=1e-4)


def test_adaround_after_equalize_with_a_reused_preprocessing_layer():
    """equalize reuses the stateless Rescaling; AdaRound's float inputs then come from the equalized model's own
    graph, not the user's (whose Rescaling tensor is not connected to the equalized model's input)."""
    import keras
    from keras import layers

    import keras_eff as ke

    inputs = keras.Input((12, 12, 3))
    x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="c1")(x)
    x = layers.Conv2D(6, 3, name="c2")(x)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).uniform(0, 255, (24, 12, 12, 3)).astype(np.float32)
    equalized = ke.ptq.equalize(model)
    assert equalized.get_layer("scale") is model.get_layer("scale")  # reused, not copied
    q = ke.quantize_model(equalized)
    ke.calibrate(q, data, progress=False)
    q = ke.ptq.adaround(q, data, iterations=3, batch_size=12, float_model=equalized)
    assert np.all(np.isfinite(q.predict(data, verbose=0)))


def test_float_model_whose_layer_of_that_name_is_a_layer_norm():
    """quantize_model runs a LayerNormalization's γ and β as a depthwise conv of the same name on a 3-D input; the
    float model's layer of that name is the LayerNormalization (another input): its targets come from the quantized
    model with quantizers bypassed, as by default (it used to fail: a rank-5 depthwise convolution)."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 12))
    x = layers.Dense(12, name="embed")(inp)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.Dense(12, activation="relu", name="mlp")(x)
    model = keras.Model(inp, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(x)))
    data = np.random.default_rng(0).normal(size=(32, 8, 12)).astype(np.float32)
    q = ke.quantize_model(model)
    ke.calibrate(q, data, progress=False)
    assert isinstance(common.quantized_layers(q)[1].layer, layers.DepthwiseConv2D)  # the LN's γ, β
    kw = dict(iterations=20, batch_size=16, layers=("ln",), weight_bits=3)
    with_float = ptq.adaround(q, data, float_model=model, **kw)
    default = ptq.adaround(q, data, **kw)
    assert list(ke.get_report(with_float, "adaround").layers) == ["ln"]
    kernel = [w for w in common.quantized_layers(with_float) if w.layer.name == "ln"][0].layer.kernel
    same = [w for w in common.quantized_layers(default) if w.layer.name == "ln"][0].layer.kernel
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(same))
