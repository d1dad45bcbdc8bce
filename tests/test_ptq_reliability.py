"""Issue 21: auto_quant's report path (D4), nested models in AdaRound (D10b), damaged tensor names (D10c), loading
without keras_eff (D10d), prune/cluster/equalize consistency (D11), AdaRound's float targets by default (D12)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff import ptq
from keras_eff.ptq import common
from keras_eff.ptq.adaround import _float_inputs


def _small(seed=0, name="small"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inp)
    x = layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    out = layers.Dense(4, name="logits")(layers.Flatten(name="flat")(x))
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def x8():
    return np.random.default_rng(0).uniform(0, 1, (48, 8, 8, 1)).astype("float32")


# -- D4: auto_quant's report path --------------------------------------------------------------------------------


def _counting_eval(calls, x):
    def score(m):
        calls.append(1)
        return -float(np.mean(np.abs(np.asarray(m(x)))))

    return score


def test_auto_quant_creates_the_report_folder(x8, tmp_path):
    calls = []
    path = tmp_path / "no" / "such" / "dir" / "aq.md"
    res = ptq.auto_quant(_small(), x8, _counting_eval(calls, x8), steps=("ptq",), report_path=str(path), progress=False)
    assert path.is_file() and (path.parent / "aq.png").stat().st_size > 1000
    assert res.report_path == str(path) and res.model is not None


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_auto_quant_refuses_an_unwritable_report_path_before_any_step(x8, tmp_path, where):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "aq.md" if where == "under_a_file" else tmp_path
    calls = []
    with pytest.raises(OSError, match=rf"auto_quant cannot write its report to '{str(path)}'.*report_path=None"):
        ptq.auto_quant(_small(), x8, _counting_eval(calls, x8), report_path=str(path), progress=False)
    assert calls == []  # refused before the float model was even scored


def test_auto_quant_keeps_the_result_when_the_report_cannot_be_written_at_the_end(x8, tmp_path):
    folder = tmp_path / "out"
    calls = []
    score = _counting_eval(calls, x8)

    def sabotage(m):  # the folder turns into a file while the steps run
        if not calls and folder.exists():
            folder.rmdir()
            folder.write_text("not a folder any more")
        return score(m)

    with pytest.warns(RuntimeWarning, match=rf"could not write the report to '{folder / 'aq.md'}'.*result"):
        res = ptq.auto_quant(_small(), x8, sabotage, steps=("ptq",), report_path=str(folder / "aq.md"), progress=False)
    assert calls and res.model is not None and res.best_step == "ptq"
    assert res.report_path is None and "aq.md" in res.report_error


# -- D10b: AdaRound on layers inside a nested model ----------------------------------------------------------------


def _nested():
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((8, 8, 1))
    y = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inner_in)
    y = layers.Conv2D(6, 3, activation="relu", name="conv2")(y)
    inner = keras.Model(inner_in, layers.Flatten(name="flat")(y), name="backbone")
    inp = keras.Input((8, 8, 1), name="image")
    out = layers.Dense(4, name="logits")(inner(layers.Rescaling(2.0, name="pre")(inp)))
    return keras.Model(inp, out, name="outer"), inner


def test_adaround_and_bias_correction_reach_layers_inside_a_nested_model(x8):
    model, _ = _nested()
    q = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q, x8, progress=False)
    inside = {"conv", "conv2"}  # the outer Rescaling and Dense are quantized layers with kernels too
    assert inside | {"pre", "logits"} == {w.layer.name for w in common.quantized_layers(q)}
    nearest = {w.layer.name: np.asarray(w.quantized_kernels()[0]["kernel"]) for w in common.quantized_layers(q)}
    q_near = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q_near, x8, progress=False)
    q = ptq.adaround(q, x8, iterations=100, batch_size=16)
    assert inside | {"logits"} <= set(ke.get_report(q, "adaround").layers)
    for w in common.quantized_layers(q):
        if w.layer.name in inside:  # rounded: on the grid, and not all to nearest
            k = np.asarray(w.layer.kernel)
            np.testing.assert_array_equal(np.asarray(w.quantized_kernels()[0]["kernel"]).reshape(k.shape), k)
            assert not np.array_equal(k, nearest[w.layer.name].reshape(k.shape))
    ref = np.asarray(model(x8))
    assert np.mean(np.square(np.asarray(q(x8)) - ref)) < np.mean(np.square(np.asarray(q_near(x8)) - ref))
    # the nested conv's cached inputs are what it sees inside the outer model (after the outer Rescaling)
    conv = next(w for w in common.quantized_layers(q) if w.layer.name == "conv")
    seen = common.layer_inputs(q, conv, x8[:4])
    assert seen.shape == (4, 8, 8, 1) and seen.max() > 1.0  # Rescaling(2.0) of inputs in [0, 1)
    qb = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(qb, x8, progress=False)
    qb = ptq.bias_correction(qb, x8)
    assert inside | {"logits"} <= set(ke.get_report(qb, "bias_correction").corrected)


def test_adaround_float_model_reaches_layers_inside_a_nested_model(x8):
    """float_model= with a nested model: a nested layer's float input is read model by model (the outer model up to
    the nested one, then inside it), and AdaRound rounds those layers with it (it used to refuse them)."""
    model, inner = _nested()
    q = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q, x8, progress=False)
    conv2 = next(w for w in common.quantized_layers(q) if w.layer.name == "conv2")
    seen = _float_inputs(model, conv2, x8, batch_size=5)
    expected = keras.Model(inner.input, inner.get_layer("conv").output)(2.0 * x8)  # after the outer Rescaling(2.0)
    np.testing.assert_allclose(seen, np.asarray(expected), rtol=1e-5, atol=1e-6)
    rounded = ptq.adaround(q, x8, iterations=100, batch_size=16, float_model=model)
    assert {"conv", "conv2", "logits"} <= set(ke.get_report(rounded, "adaround").layers)
    for w in common.quantized_layers(rounded):
        if w.layer.name in ("conv", "conv2"):
            k = np.asarray(w.layer.kernel)
            np.testing.assert_array_equal(np.asarray(w.quantized_kernels()[0]["kernel"]).reshape(k.shape), k)


# -- D10c: a damaged tensor name ---------------------------------------------------------------------------------


def test_a_damaged_tensor_name_names_the_file_and_tensor(x8, tmp_path):
    data = te.to_tflite(_small(), representative_data=x8)
    graph = te.read_graph_flatbuffer(data)
    idx, name = next((i, t.name) for i, t in graph.tensors.items() if len(t.name) > 6)
    at = data.find(name.encode())
    bad = bytearray(data)
    bad[at : at + 2] = b"\xff\xfe"
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(bad))
    with pytest.raises(te.InvalidTFLiteModel, match=rf"file '{path}'.*tensor {idx}.*not valid UTF-8"):
        te.read_graph(str(path))
    with pytest.raises(te.InvalidTFLiteModel, match=rf"tensor {idx}"):
        te.check_int8(bytes(bad))
    # the flatbuffer reader still reads it, the bad bytes replaced
    assert "\ufffd" in te.read_graph_flatbuffer(str(path)).tensors[idx].name


# -- D10d: a QAT .keras in a process without keras_eff -----------------------------------------------------------


def test_loading_a_qat_model_needs_keras_eff_imported_as_the_readme_says(x8, tmp_path):
    q = ke.quantize_model(_small())
    ke.calibrate(q, x8, progress=False)
    path = tmp_path / "qat.keras"
    q.save(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd())
    bare = subprocess.run(
        [sys.executable, "-c", "import keras, sys; keras.saving.load_model(sys.argv[1])", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bare.returncode != 0 and "Could not locate class" in bare.stderr
    assert "'module': 'keras_eff." in bare.stderr  # Keras's message shows where the class lives, no more
    loaded = keras.saving.load_model(path)  # this process has imported keras_eff
    np.testing.assert_array_equal(np.asarray(loaded(x8[:4])), np.asarray(q(x8[:4])))
    readme = " ".join(open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read().split())
    assert "after `import keras_eff`" in readme and "Could not locate class 'ActivationQuantizer'" in readme
    assert "Could not locate class 'ActivationQuantizer'" in bare.stderr  # the message the README quotes


# -- D11: prune / cluster / equalize consistency -----------------------------------------------------------------


def _prunable(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 4))
    x = layers.Conv2D(16, 3, name="conv")(inp)
    x = layers.Conv2D(16, 3, name="conv2")(x)
    return keras.Model(inp, layers.Dense(8, name="fc")(layers.Flatten()(x)), name="prunable")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_prune_model_refuses_non_finite_weights_like_quantize(value):
    model = _prunable()
    k = model.get_layer("conv2").kernel
    bad = np.asarray(k).copy()
    bad[0, 0, 0, 0] = value
    k.assign(bad)
    msg = r"layer 'conv2' of model 'prunable' has NaN or infinite values in .*kernel: fix or retrain the model"
    with pytest.raises(ValueError, match=msg + " before pruning it"):
        ke.prune_model(model, 0.5, min_weights=1)
    with pytest.raises(ValueError, match=msg + " before quantizing it"):
        ke.quantize_model(model)
    with pytest.raises(ValueError, match=msg + " before equalizing it"):
        ptq.equalize(model)
    with pytest.raises(ValueError, match=msg + " before clustering it"):
        ke.cluster_model(model, 8)


def test_cluster_model_with_nothing_to_cluster_raises_like_prune_model():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.GlobalAveragePooling2D()(layers.ReLU()(inp)), name="no_weights")
    with pytest.raises(ValueError, match="no layer of model 'no_weights' can be pruned"):
        ke.prune_model(model, 0.5)
    with pytest.raises(ValueError, match="no layer of model 'no_weights' can be clustered"):
        ke.cluster_model(model, 8)
    with pytest.raises(
        ValueError,
        match=r"no layer of model 'prunable' can be clustered with these settings: "
        r"conv: skipped by request; conv2: skipped by request; fc: skipped",
    ):
        ke.cluster_model(_prunable(), 8, skip=("conv", "conv2", "fc"))


def test_nm_structure_refuses_a_schedule_with_another_sparsity():
    model = _prunable()
    with pytest.raises(ValueError, match=r"2:4.*sparsity of 0\.5.*schedule.*0\.8"):
        ke.prune_model(model, ke.PolynomialDecay(0.0, 0.8, 0, 100), structure="2:4", min_weights=1)
    with pytest.raises(ValueError, match=r"1:4.*0\.75.*0\.5"):
        ke.prune_model(model, 0.5, structure="1:4", min_weights=1)
    # the default schedule, or one that agrees, is fine
    for schedule in (None, 0.5, ke.PolynomialDecay(0.0, 0.5, 0, 100)):
        pruned = ke.prune_model(model, schedule, structure="2:4", min_weights=1)
        assert ke.pruning.sparsity_report(pruned) is not None


def test_equalize_reports_batchnorms_folded_inside_nested_models():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 8, 3))
    y = layers.Conv2D(4, 3, use_bias=False, name="inner_conv")(inner_in)
    y = layers.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_in, layers.ReLU()(y), name="block")
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(3, 1, use_bias=False, name="outer_conv")(inp)
    x = layers.BatchNormalization(name="outer_bn")(x)
    model = keras.Model(inp, inner(x), name="with_block")
    eq = ptq.equalize(model)
    report = ke.get_report(eq, "equalization")
    assert sorted(report.folded_batchnorm) == [("inner_conv", "inner_bn"), ("outer_conv", "outer_bn")]
    assert str(report).startswith("2 BatchNorms folded")
    assert not any(isinstance(x, layers.BatchNormalization) for x in eq.get_layer("block").layers)


# -- D12: AdaRound's default call uses float targets ----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """A 5-conv CNN trained on scikit-learn's digits (8×8), about 92 % on the held-out 397: deep enough for the
    rounding errors of early layers to pile up, which only float targets let later layers make up for."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int32")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = inp
    for i in range(1, 6):
        h = layers.Conv2D(16, 3, strides=2 if i == 3 else 1, padding="same", activation="relu", name=f"c{i}")(h)
    out = layers.Dense(10, name="fc")(layers.Flatten()(h))
    model = keras.Model(inp, out, name="digits")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1400], y[:1400], epochs=20, batch_size=32, verbose=0)
    return model, x[:128], x[1400:]


def test_adaround_default_call_recovers_as_much_as_with_float_model(digits, monkeypatch):
    model, x_cal, x_test = digits
    ref = np.asarray(model(x_test))
    cfg = ke.QuantConfig(weight_bits=3, weight_granularity="per_tensor")

    def err(q):  # output error on held-out digits, against the float model
        return float(np.mean(np.square(np.asarray(q(x_test)) - ref)))

    def run(**kw):
        q = ke.quantize_model(model, cfg)
        ke.calibrate(q, x_cal, progress=False)
        if kw.pop("skip", False):
            return q
        return ptq.adaround(q, x_cal, iterations=100, batch_size=32, **kw)

    nearest = err(run(skip=True))
    with_float = err(run(float_model=model))
    default_q = run()
    default = err(default_q)
    # the share of nearest rounding's error (3-bit per-tensor weights) won back. Measured with seeds 0-3 of this
    # model: default = float_model= 0.29-0.59, the old default 0.15-0.45, at least 0.13 less each time
    rec = lambda e: (nearest - e) / nearest  # noqa: E731
    print(f"recovered: default {rec(default):.3f}, float_model= {rec(with_float):.3f}")
    assert rec(default) >= rec(with_float) - 0.03, (rec(default), rec(with_float))
    # the old behaviour: each layer reproduced its own float output on the quantized input
    monkeypatch.setattr(sys.modules["keras_eff.ptq.adaround"], "_float_targets", lambda *args: args[3])
    old = err(run())
    print(f"recovered: old default {rec(old):.3f}")
    assert rec(default) > rec(old) + 0.05, (rec(default), rec(with_float), rec(old))
    # the model returned has its quantizers working: its output is the quantized one
    q2 = ke.quantize_model(model, cfg)
    ke.calibrate(q2, x_cal, progress=False)
    q2.set_weights(default_q.get_weights())
    np.testing.assert_array_equal(np.asarray(default_q(x_test[:8])), np.asarray(q2(x_test[:8])))
