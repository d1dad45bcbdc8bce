"""Post-training quantization: equalization, bias correction, auto_quant, mixed precision, analysis, bad inputs."""

import json

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import keras_eff.models
from keras_eff import ptq
from keras_eff.ptq import common


def _randomize_bn(model, seed=0):
    """BatchNorm statistics far from the identity, as training leaves them (channel ranges differ a lot)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = np.exp(rng.uniform(np.log(0.05), np.log(4.0), n))
            layer.set_weights([gamma, rng.normal(1.0, 1.0, n), rng.normal(0, 1, n), rng.uniform(0.1, 2.0, n)])
    return model


def relu_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.ReLU(name="conv_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    x = layers.Conv2D(12, 1, activation="relu", name="pw")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(5, name="logits")(x)
    return _randomize_bn(keras.Model(inp, out, name="relu_model"), seed)


def relu6_model(seed=0):
    keras.utils.set_random_seed(seed)
    return _randomize_bn(ke.models.ds_cnn(input_shape=(12, 12, 1), num_classes=5, width=4), seed)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 1, (96, 12, 12, 1)).astype("float32")


# -- equalization ------------------------------------------------------------------------------------------------


def test_cross_layer_scaling_alone_preserves_the_function(images):
    model = relu_model()
    eq = ptq.equalize(model, absorb_bias=False)
    rep = ke.get_report(eq, "equalization")
    assert [(a, b) for a, b, _ in rep.pairs] == [("conv", "dw"), ("dw", "pw"), ("pw", "logits")]
    y0, y1 = model(images).numpy(), eq(images).numpy()
    assert np.max(np.abs(y1 - y0)) <= 1e-4 * np.max(np.abs(y0))
    # after convergence each channel's range is the same in the layer before and after it
    by = {l.name: l for l in eq.layers}
    from keras_eff.ptq import layer_math as lm

    for a, b, _ in rep.pairs:
        r1 = lm.out_ranges(by[a], np.asarray(by[a].kernel))
        r2 = lm.in_ranges(by[b], np.asarray(by[b].kernel))
        np.testing.assert_allclose(r1, r2, rtol=1e-3)
    # the ranges really were unbalanced before, and are closer now
    spread = lambda r: np.max(r) / np.min(r)  # noqa: E731
    assert spread(rep.ranges_after["dw"]) < spread(rep.ranges_before["dw"])
    assert not any(isinstance(l, layers.BatchNormalization) for l in eq.layers)
    assert len(rep.folded_batchnorm) == 2


def test_bias_absorption_moves_bias_and_keeps_outputs_close(images):
    model = relu_model()
    eq = ptq.equalize(model)
    report = ke.get_report(eq, "equalization")
    assert "dw" in report.absorbed  # dw -> pw (1x1): exact wherever the pre-activation stays above c
    assert "conv" not in report.absorbed  # conv -> dw (3x3 'same'): padding, not absorbed by default
    y0, y1 = model(images).numpy(), eq(images).numpy()
    assert np.mean(np.abs(y1 - y0)) <= 0.05 * np.mean(np.abs(y0))
    stats = report.statistics["dw"]
    assert np.all(np.asarray(stats["mean"]) - 3 * np.asarray(stats["std"]) <= 1e-6)


def test_relu6_is_replaced_only_when_asked_and_model_untouched(images):
    model = relu6_model()
    before = [w.copy() for w in model.get_weights()]
    eq = ptq.equalize(model)
    report = ke.get_report(eq, "equalization")
    assert "dw0_relu6" in report.relu6_replaced and report.pairs
    assert not any(isinstance(l, layers.ReLU) and l.max_value is not None for l in eq.layers)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    absorbed_only = ke.get_report(ptq.equalize(model, scale=False), "equalization")  # through a ReLU6 needs ReLU
    assert absorbed_only.absorbed and absorbed_only.pairs == []
    assert set(absorbed_only.relu6_replaced) == {f"{n}_relu6" for n in absorbed_only.absorbed}
    kept = ptq.equalize(model, relu6_to_relu=False)
    kept_report = ke.get_report(kept, "equalization")
    assert kept_report.pairs == [] and kept_report.relu6_replaced == []
    assert kept_report.skipped_pairs
    np.testing.assert_allclose(kept(images).numpy(), model(images).numpy(), rtol=1e-4, atol=1e-4)


def test_equalize_keeps_accuracy_of_a_trained_model(trained_models, fmnist):
    """Stated bound: the equalized float model (BN folded, CLE, bias absorption, ReLU6 -> ReLU) stays within
    2 points of the original's accuracy."""
    _, (x_test, y_test) = fmnist
    model = trained_models["ds_cnn"]
    acc = lambda m: np.mean(np.argmax(m.predict(x_test, verbose=0), -1) == y_test)  # noqa: E731
    eq = ptq.equalize(model)
    assert abs(acc(eq) - acc(model)) <= 0.02


# -- bias correction -----------------------------------------------------------------------------------------------


def _mean_layer_errors(q, x, biases):
    """Mean output error per channel of each quantized layer vs its float kernels with the original bias."""
    out = {}
    for w in common.quantized_layers(q):
        xs = common.layer_inputs(q, w, x)
        qk, b = w.quantized_kernels()
        ref = np.asarray(common.pre_activation(w, xs, common.float_kernels(w), biases[w.layer.name]))
        got = np.asarray(common.pre_activation(w, xs, qk, b))
        out[w.layer.name] = np.abs((got - ref).reshape(-1, ref.shape[-1]).mean(0)).mean()
    return out


@pytest.mark.parametrize("method", ["empirical", "analytical"])
def test_bias_correction_reduces_mean_output_error(images, method):
    eq = ptq.equalize(relu_model(), absorb_bias=False)
    q = ke.quantize_model(eq, ke.QuantConfig(weight_bits=4, weight_granularity="per_tensor"))
    ke.calibrate(q, images, progress=False)
    biases = {w.layer.name: np.asarray(w.layer.bias).copy() for w in common.quantized_layers(q)}
    before = _mean_layer_errors(q, images, biases)
    if method == "empirical":
        corrected = ptq.bias_correction(q, images)
        report = ke.get_report(corrected, "bias_correction")
        assert set(report.corrected) == set(before)
    else:
        corrected = ptq.bias_correction(q, statistics=eq)
        report = ke.get_report(corrected, "bias_correction")
        assert set(report.corrected) == {"dw", "pw"}  # conv reads the image, logits a max pool
        again = ke.get_report(ptq.bias_correction(q, statistics=ke.get_report(eq, "equalization")), "bias_correction")
        assert again.corrected == report.corrected  # the report, or the equalized model it belongs to
    after = _mean_layer_errors(corrected, images, biases)
    for name in report.corrected:
        if method == "empirical":
            assert after[name] < 0.05 * before[name] + 1e-6, name
    total_before = sum(before[n] for n in report.corrected)
    total_after = sum(after[n] for n in report.corrected)
    assert total_after < 0.8 * total_before


def test_analytical_correction_reads_batchnorm_inside_wrappers(images):
    q = ke.quantize_model(relu_model(), ke.QuantConfig(weight_bits=4))
    ke.calibrate(q, images, progress=False)
    report = ke.get_report(ptq.bias_correction(q), "bias_correction")  # BN statistics of the wrappers in front
    assert "dw" in report.corrected
    assert any(name == "conv" for name, _ in report.skipped)


# -- auto_quant ----------------------------------------------------------------------------------------------------


def test_auto_quant_report_lists_every_step(images, tmp_path):
    model = relu_model()
    ref = model(images).numpy()
    # a score that no quantized model reaches exactly: every step is tried
    score = lambda m: -float(np.mean(np.abs(np.asarray(m(images)) - ref)))  # noqa: E731
    config = ptq.AutoQuantConfig(allowed_drop=0.0, adaround={"iterations": 20})
    res = ptq.auto_quant(model, images, score, config=config, report_path=str(tmp_path / "aq.md"), progress=False)
    steps = [s["step"] for s in res.steps]
    assert steps == ["ptq", "cle", "cle+bc", "cle+adaround"]
    text = (tmp_path / "aq.md").read_text()
    for s in steps:
        assert f"| {s} |" in text
    assert (tmp_path / "aq.png").stat().st_size > 1000
    assert not res.target_met
    assert res.best_step == max(res.steps, key=lambda s: s["score"])["step"]
    kept = ke.get_report(res.model, "auto_quant")  # the result, reachable from its model (without the model)
    assert kept.model is None and kept.steps == res.steps and kept.best_step == res.best_step
    # a loose target stops after the first step and says what it did not try
    res2 = ptq.auto_quant(model, images, score, allowed_drop=10.0, report_path=str(tmp_path / "aq2.md"), progress=False)
    assert [s["step"] for s in res2.steps] == ["ptq"] and res2.target_met
    assert "Not tried" in (tmp_path / "aq2.md").read_text()


# -- mixed precision, analysis, encodings -----------------------------------------------------------------------


def test_mixed_precision_reaches_the_average_width(images):
    model = relu_model()
    ref = model(images).numpy()
    score = lambda m: -float(np.mean(np.square(np.asarray(m(images)) - ref)))  # noqa: E731
    res = ke.quantization.mixed_precision(model, images, score, target_average_bits=5.0, candidate_bits=(8, 4))
    assert res.average_bits <= 5.0 + 1e-9
    assert set(res.bits.values()) <= {8, 4} and 4 in res.bits.values()
    # largest layers first: a layer left at 8 bits while a smaller one went to 4 must be the more sensitive one
    for n, bn in res.bits.items():
        for m, bm in res.bits.items():
            if bn == 8 and bm == 4 and res.parameters[n] > res.parameters[m]:
                assert res.sensitivity[n][4] > res.sensitivity[m][4], (n, m)
    q = ke.quantize_model(model, res.config)
    widths = {w.layer.name: w.weight_bits for w in common.quantized_layers(q)}
    assert widths == res.bits
    assert res.packed_bytes < res.tflite_bytes
    assert set(res.sensitivity) == set(res.bits)


def test_analysis_plots_and_data(images, tmp_path):
    import matplotlib

    matplotlib.use("svg")  # stands for a notebook's inline backend: the plots must leave the caller's backend alone
    eq = ptq.equalize(relu_model())
    data = ptq.plot_weight_ranges(eq, tmp_path / "ranges.png")
    assert set(data["before"]) == {"conv", "dw", "pw", "logits"} and (tmp_path / "ranges.png").exists()
    sens = {"conv": {4: 0.1, 6: 0.01}, "pw": {4: 0.3, 6: 0.02}}
    ptq.plot_sensitivity(sens, tmp_path / "sens.png", {"conv": 72, "pw": 96})
    assert (tmp_path / "sens.png").stat().st_size > 1000
    q = ke.quantize_model(eq)
    ke.calibrate(q, images, progress=False)
    div = ptq.divergence(q, images, samples=4, path=tmp_path / "div.png")
    names = [r["layer"] for r in div["layers"]]
    assert names[:3] == ["conv", "dw", "pw"] and "logits" in names
    assert all(r["max_lsb"] <= 2.0 for r in div["layers"]) and div["first_drift"] is None
    assert (tmp_path / "div.png").exists()
    assert matplotlib.get_backend() == "svg"
    enc = ptq.export_encodings(q, tmp_path / "enc.json")
    loaded = json.loads((tmp_path / "enc.json").read_text())
    assert loaded == json.loads(json.dumps(enc))
    conv = loaded["param_encodings"]["conv/kernel"]
    assert len(conv) == 8 and all(e["bitwidth"] == 8 and e["offset"] == 0 for e in conv)
    w = [l for l in q.layers if getattr(l, "name", "") == "quant_conv"][0]
    np.testing.assert_allclose(
        [e["scale"] for e in conv], np.asarray(w.weight_quantizer.scale(np.asarray(w.layer.kernel))), rtol=1e-6
    )
    acts = loaded["activation_encodings"]
    assert acts and all(-128 <= e[0]["offset"] <= 127 and e[0]["min"] <= 0 <= e[0]["max"] for e in acts.values())


# -- options and bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ptq.EqualizeConfig, ptq.BiasCorrectionConfig, ptq.AdaRoundConfig, ptq.AutoQuantConfig])
def test_config_round_trip(cls):
    p = cls()
    assert cls.from_config(p.get_config()) == p
    with pytest.raises(ValueError, match="no settings"):
        cls.from_config({"bogus": 1})


def test_relu_mean_matches_sampling():
    from keras_eff.ptq.bias_correction import expected_activation

    rng = np.random.default_rng(0)
    mean, std = np.array([-1.0, 0.5, 3.0, 7.0]), np.array([0.5, 1.0, 2.0, 1.5])
    h = rng.normal(mean, std, (200_000, 4))
    np.testing.assert_allclose(expected_activation(mean, std, "relu"), np.maximum(h, 0).mean(0), atol=0.02)
    np.testing.assert_allclose(expected_activation(mean, std, "relu6"), np.clip(h, 0, 6).mean(0), atol=0.02)


def test_bad_inputs_give_clear_errors(images):
    eq = ptq.equalize(relu_model())
    q = ke.quantize_model(eq)
    ke.calibrate(q, images, progress=False)
    with pytest.raises(ValueError, match="empty"):
        ptq.bias_correction(q, images[:0])
    with pytest.raises(ValueError, match=r"shape \(4, 28, 28, 1\).*expects \(n, 12, 12, 1\)"):
        ptq.adaround(q, np.zeros((4, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="weight_bits=9 is out of range"):
        ptq.adaround(q, images, weight_bits=9)
    with pytest.raises(ValueError, match="weight_bits=1 is out of range"):
        ptq.AdaRoundConfig(weight_bits=1)
    with pytest.raises(ValueError, match="candidate_bits=1 is out of range"):
        ke.quantization.MixedPrecisionConfig(target_average_bits=5, candidate_bits=(8, 1))
    with pytest.raises(ValueError, match="target_average_bits=3.0 is out of range"):
        ke.quantization.MixedPrecisionConfig(target_average_bits=3.0, candidate_bits=(8, 4))
    with pytest.raises(ValueError, match="give target_average_bits"):
        ke.quantization.MixedPrecisionConfig()
    with pytest.raises(ValueError, match="no quantized layer named \\['nope'\\]"):
        ptq.bias_correction(q, images, layers=("nope",))
    plain = ke.quantize_model(ptq.equalize(relu_model(), scale=False, absorb_bias=False))
    ke.calibrate(plain, images, progress=False)
    with pytest.raises(ValueError, match="needs BatchNorm statistics"):
        ptq.bias_correction(plain)
    with pytest.raises(ValueError, match="has no quantized conv or dense layers"):
        ptq.bias_correction(relu_model(), images)
    with pytest.raises(ValueError, match="data is required"):
        ptq.adaround(q, None)
    with pytest.raises(ValueError, match="allowed_drop"):
        ptq.auto_quant(relu_model(), images, lambda m: 0.0, allowed_drop=-1)
    with pytest.raises(ValueError, match="float_model 'other' has no layer named 'conv'"):
        other = keras.Sequential([keras.Input((12, 12, 1)), layers.Flatten(), layers.Dense(5)], name="other")
        ptq.adaround(q, images, float_model=other, iterations=1)
    with_bn = ke.quantize_model(relu_model())
    with pytest.raises(ValueError, match="fold BatchNorm before quantize_model"):
        ptq.adaround(with_bn, images, layers=("conv",))


def test_divergence_tells_apart_layers_whose_names_prefix_each_other():
    """'quant_sum_1/' in a TFLite tensor's name can be the traced scope of the wrapper 'quant_sum' as well as of
    'quant_sum_1', and an op carries the names of all that TFLite fused into it: a tensor is matched by name, size
    per sample and the wrapper's own output grid, so each layer is compared with its own tensor (on LiteRT's
    built-in kernels, the simulation emulating them)."""
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for name in ("sum", "sum_1", "sum_1_1"):
        a = layers.Conv2D(6, 3, padding="same", name=f"{name}_a")(x)
        b = layers.Conv2D(6, 1, name=f"{name}_b")(x)
        x = layers.Add(name=name)([a, b])
    x = layers.Conv2D(4, 1, name="last")(x)  # (the layer before a global average leaves its range to it)
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    q = ke.quantize_model(model)
    ke.calibrate(q, data, progress=False)
    rows = {r["layer"]: r for r in ptq.divergence(q, data, samples=4, tolerance_lsb=1.0)["layers"]}
    names = [n for base in ("sum", "sum_1", "sum_1_1") for n in (f"{base}_a", f"{base}_b", base)]
    assert set(names) <= set(rows)
    assert len({rows[n]["tflite_tensor"] for n in ("sum", "sum_1", "sum_1_1")}) == 3
    assert all(rows[n]["max_lsb"] < 0.5 for n in names), {n: rows[n]["max_lsb"] for n in names}
    assert {l.integer_kernels for l in q.layers if isinstance(l, ke.quantization.QuantizeWrapper)} == {"xnnpack"}
