"""Issue 21 item 2: one convention for options and results (CONTRIBUTING.md).

Options are ``…Config`` dataclasses passed as ``config=`` (or a dict), any field also a keyword that overrides it;
the old names and keywords answer for one release with a DeprecationWarning that points at the caller's line.
Functions that change a model in place return None; the others return a new model and leave theirs alone. Reports
that describe a model are computed from it (the same after save and load); reports of a process are read with
``keras_eff.get_report``.
"""

import gc
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff import compression, ptq, quantization
from keras_eff.ptq import common
from keras_eff.quantization import QuantizationReport, quantization_report


def _model(seed=0, name="conv_net"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    out = layers.Dense(4, name="logits")(layers.Flatten(name="flat")(x))
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def x8():
    return np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype("float32")


@pytest.fixture(scope="module")
def calibrated(x8):
    """A quantized model without BatchNorm to fold (AdaRound's input), 4-bit weights, calibrated."""
    q = ke.quantize_model(ptq.equalize(_model()), weight_bits=4)
    ke.calibrate(q, x8, progress=False)
    return q


def _state(model):
    """Every variable of the model (weights, ranges, frozen flags), by path."""
    return {v.path: np.asarray(v).copy() for v in model.weights}


def _assert_same_state(model, before):
    after = _state(model)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


# -- the old names: one release, with a warning at the caller's line -------------------------------------------

RENAMED = [
    (ptq, "EqualizeParams", "EqualizeConfig"),
    (ptq, "BiasCorrectionParams", "BiasCorrectionConfig"),
    (ptq, "AdaRoundParams", "AdaRoundConfig"),
    (ptq, "AutoQuantParams", "AutoQuantConfig"),
    (quantization, "MixedPrecisionParams", "MixedPrecisionConfig"),
    (compression, "CompressionParameters", "CompressionConfig"),
    (compression, "SpatialSvdParameters", "SpatialSvdConfig"),
    (compression, "ChannelPruningParameters", "ChannelPruningConfig"),
]


@pytest.mark.parametrize(("package", "old", "new"), RENAMED, ids=[old for _, old, _ in RENAMED])
def test_old_option_names_answer_with_the_new_class_and_a_warning(package, old, new):
    with pytest.warns(
        DeprecationWarning,
        match=rf"{package.__name__}\.{old} is deprecated.*use "
        rf"{package.__name__}\.{new}",
    ) as caught:
        cls = getattr(package, old)
    assert cls is getattr(package, new)
    assert caught[0].filename == __file__  # points at the user's line, not at keras_eff
    assert old not in package.__all__ and new in package.__all__


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("keras_eff.ptq.params", "AdaRoundParams", "AdaRoundConfig"),
        ("keras_eff.compression.parameters", "SpatialSvdParameters", "SpatialSvdConfig"),
        ("keras_eff.quantization.mixed_precision", "MixedPrecisionParams", "MixedPrecisionConfig"),
    ],
)
def test_old_names_answer_in_the_defining_modules_too(module, old, new):
    import importlib

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(mod, old).__name__ == new
    with pytest.raises(AttributeError, match="no attribute 'Bogus'"):
        mod.Bogus  # noqa: B018


def test_old_keywords_still_work_with_a_warning(calibrated, x8):
    with pytest.warns(DeprecationWarning, match=r"equalize\(params=\.\.\.\) is deprecated.*equalize\(config=") as w:
        eq = ptq.equalize(_model(), params=ptq.EqualizeConfig(absorb_bias=False))
    assert w[0].filename == __file__
    assert not ke.get_report(eq, "equalization").absorbed
    with pytest.warns(DeprecationWarning, match=r"bias_correction\(params="):
        ptq.bias_correction(calibrated, x8, params={"max_samples": 16})
    with pytest.warns(DeprecationWarning, match=r"spatial_svd\(parameters="):
        result = compression.spatial_svd(
            _model(), 0.9, parameters=compression.SpatialSvdConfig(candidate_ratios=(0.8, 0.6)), verbose=False
        )
    with pytest.warns(DeprecationWarning, match=r"CompressionResult\.parameters is deprecated"):
        assert result.parameters is result.config
    with pytest.raises(TypeError, match="both config= and params="):
        ptq.equalize(_model(), config={}, params={})


def test_a_quant_config_given_as_config_still_works_with_a_warning(x8):
    qc = ke.QuantConfig(weight_bits=6)
    with pytest.warns(DeprecationWarning, match=r"auto_quant\(quant_config=QuantConfig"):
        res = ptq.auto_quant(_model(), x8, lambda m: 0.0, config=qc, steps=("ptq",), report_path=None, progress=False)
    assert {w.weight_bits for w in common.quantized_layers(res.model)} == {6}
    with pytest.raises(TypeError, match="give it once, as quant_config="):
        ptq.auto_quant(_model(), x8, lambda m: 0.0, config=qc, quant_config=qc, report_path=None, progress=False)
    with pytest.warns(DeprecationWarning, match=r"layer_sensitivity\(quant_config=") as w:
        quantization.layer_sensitivity(
            _model(), x8, lambda m: 0.0, candidate_bits=(4,), layers=["logits"], config=qc, calibration_samples=8
        )
    assert w[0].filename == __file__


# -- config=: an instance or a dict, keywords override, unknown keywords are named ---------------------------------


def test_config_takes_a_dict_and_keywords_override_it(calibrated, x8):
    rounded = ptq.adaround(calibrated, x8, {"iterations": 5, "layers": ["conv"]}, layers=["conv2"], batch_size=8)
    assert set(ke.get_report(rounded, "adaround").layers) == {"conv2"}  # the keyword won
    config = ptq.BiasCorrectionConfig(layers=("conv",))
    corrected = ptq.bias_correction(calibrated, x8, config, layers=("logits",))
    assert set(ke.get_report(corrected, "bias_correction").corrected) == {"logits"}
    assert config.layers == ("conv",)  # the caller's config is not changed
    q = ke.quantize_model(_model(), {"weight_bits": 6}, activation_bits=7)
    assert {(w.weight_bits, w.activation_bits) for w in common.quantized_layers(q)} == {(6, 7)}


@pytest.mark.parametrize(
    "call",
    [
        lambda q, x: ptq.adaround(q, x, iteratons=5),
        lambda q, x: ptq.bias_correction(q, x, max_sample=5),
        lambda q, x: ptq.equalize(_model(), scael=False),
        lambda q, x: ptq.auto_quant(_model(), x, lambda m: 0.0, stpes=("ptq",), report_path=None),
        lambda q, x: quantization.mixed_precision(_model(), x, lambda m: 0.0, max_dorp=0.1),
        lambda q, x: compression.spatial_svd(_model(), 0.5, multipl=8),
        lambda q, x: ke.quantize_model(_model(), weight_bit=4),
    ],
    ids=["adaround", "bias_correction", "equalize", "auto_quant", "mixed_precision", "spatial_svd", "quantize_model"],
)
def test_an_unknown_keyword_names_the_valid_fields(calibrated, x8, call):
    with pytest.raises(TypeError, match=r"unexpected keyword argument \w+; its options are the fields of \w+Config: "):
        call(calibrated, x8)


def test_a_dict_config_with_an_unknown_key_is_refused():
    with pytest.raises(
        TypeError,
        match=r"equalize\(config=\.\.\.\) holds unknown option bogus; the fields of "
        r"EqualizeConfig are: scale, ",
    ):
        ptq.equalize(_model(), {"bogus": 1})
    with pytest.raises(TypeError, match="takes a EqualizeConfig or a dict of its fields, got AdaRoundConfig"):
        ptq.equalize(_model(), ptq.AdaRoundConfig())


def test_prune_and_cluster_take_a_config_and_the_settings_given_override_it():
    model = _model()
    pruned = ke.prune_model(model, config=ke.pruning.PruningConfig(0.5, min_weights=0), skip=["logits"])
    status = {r["layer"]: r["status"] for r in ke.sparsity_report(pruned).rows}
    assert status["conv"] == status["conv2"] == "pruned" and status["logits"].startswith("dense: not selected")
    pruned = ke.prune_model(model, config={"schedule": 0.5, "min_weights": 0})
    assert {r["status"] for r in ke.sparsity_report(pruned).rows} == {"pruned"}
    clustered = ke.cluster_model(
        model, config=ke.clustering.ClusterConfig(n_clusters=4, skip=("conv",)), skip=("logits",)
    )
    assert ke.clustering_report(clustered).clustered_layers == ["conv", "conv2"]


# -- in place returns None; everything else returns a new model and leaves its input alone --------------------------


def test_in_place_functions_return_none(x8):
    q = ke.quantize_model(_model())
    assert ke.calibrate(q, x8, progress=False) is None
    assert te.find_unset_ranges(q) == []  # the model itself was calibrated
    assert quantization.set_integer_kernels(q, "micro") is None
    assert {w.integer_kernels for w in common.quantized_layers(q)} == {"micro"}
    assert quantization.place_ranges(q) is None


def test_adaround_returns_a_new_model_and_leaves_the_input_unchanged(calibrated, x8):
    before, y = _state(calibrated), np.asarray(calibrated(x8))
    rounded = ptq.adaround(calibrated, x8, iterations=20, batch_size=8, weight_bits=3)
    assert rounded is not calibrated
    _assert_same_state(calibrated, before)
    np.testing.assert_array_equal(np.asarray(calibrated(x8)), y)
    assert {w.weight_bits for w in common.quantized_layers(calibrated)} == {4}
    assert {w.weight_bits for w in common.quantized_layers(rounded)} == {3}
    assert not any(v1 is v2 for v1 in rounded.weights for v2 in calibrated.weights)
    pairs = zip(common.quantized_layers(rounded), common.quantized_layers(calibrated), strict=True)
    changed = [
        w.layer.name for w, v in pairs if not np.array_equal(np.asarray(w.layer.kernel), np.asarray(v.layer.kernel))
    ]
    assert changed == ["conv", "conv2", "logits"]


def test_bias_correction_returns_a_new_model_and_leaves_the_input_unchanged(calibrated, x8):
    before, y = _state(calibrated), np.asarray(calibrated(x8))
    corrected = ptq.bias_correction(calibrated, x8)
    _assert_same_state(calibrated, before)
    np.testing.assert_array_equal(np.asarray(calibrated(x8)), y)
    report = ke.get_report(corrected, "bias_correction")
    for w in common.quantized_layers(corrected):
        if w.layer.name in report.corrected:
            old = np.asarray(calibrated.get_layer(w.name).layer.bias)
            np.testing.assert_allclose(
                np.asarray(w.layer.bias), old + np.asarray(report.corrected[w.layer.name], np.float32), rtol=1e-6
            )


def test_the_copy_of_a_quantized_model_is_exact_and_exports_the_same_file(calibrated, x8):
    copy = common.copy_quantized(calibrated)
    assert copy.name == calibrated.name
    np.testing.assert_array_equal(np.asarray(copy(x8)), np.asarray(calibrated(x8)))  # integer inference, too
    original, copied = te.to_tflite(calibrated), te.to_tflite(copy)
    out = [te.TFLiteModel(data).predict(x8[:8]) for data in (original, copied)]
    np.testing.assert_array_equal(out[0], out[1])
    g1, g2 = te.read_graph(original), te.read_graph(copied)
    assert [op.name for op in g1.ops] == [op.name for op in g2.ops]
    for t in g1.tensors:  # the same grids: ranges and their placement came along
        np.testing.assert_array_equal(g1.tensors[t].scales, g2.tensors[t].scales)


@pytest.mark.parametrize(
    "make",
    [
        lambda m, x: ptq.equalize(m),
        lambda m, x: ke.quantize_model(m),
        lambda m, x: ke.prune_model(m, 0.5, min_weights=100),
        lambda m, x: ke.cluster_model(m, 4),
        lambda m, x: ke.strip(m),
        lambda m, x: (
            ptq.auto_quant(
                m, x, lambda q: 0.0, steps=("ptq", "cle"), allowed_drop=-0.0, report_path=None, progress=False
            ).model
        ),
        lambda m, x: (
            quantization.mixed_precision(m, x, lambda q: 0.0, max_drop=0.0, candidate_bits=(8, 4), export=False).model
        ),
        lambda m, x: compression.spatial_svd(m, 0.9, candidate_ratios=(0.8, 0.6), verbose=False).model,
        lambda m, x: compression.channel_pruning(m, 0.9, x, candidate_ratios=(0.8, 0.6), verbose=False).model,
    ],
    ids=[
        "equalize",
        "quantize_model",
        "prune_model",
        "cluster_model",
        "strip",
        "auto_quant",
        "mixed_precision",
        "spatial_svd",
        "channel_pruning",
    ],
)
def test_functions_that_return_a_model_leave_their_input_unchanged(x8, make):
    model = _model()
    before, y = _state(model), np.asarray(model(x8))
    new = make(model, x8)
    assert isinstance(new, keras.Model) and new is not model
    _assert_same_state(model, before)
    np.testing.assert_array_equal(np.asarray(model(x8)), y)


# -- reports ------------------------------------------------------------------------------------------------------


def test_no_report_is_stuck_onto_a_model(calibrated, x8):
    model = _model()
    eq = ptq.equalize(model)
    q = ke.quantize_model(eq)
    rounded = ptq.adaround(calibrated, x8, iterations=2, batch_size=8)
    corrected = ptq.bias_correction(calibrated, x8)
    pruned = ke.prune_model(model, 0.5, min_weights=100)
    clustered = ke.cluster_model(model, 4)
    for m, attr in (
        (eq, "equalization"),
        (q, "quantization_report"),
        (rounded, "adaround"),
        (corrected, "bias_correction"),
        (pruned, "_keras_eff_pruning_skipped"),
        (clustered, "clustered_layers"),
    ):
        assert attr not in vars(m), attr


def test_process_reports_are_read_with_get_report(calibrated, x8):
    eq = ptq.equalize(_model())
    assert set(ke.get_reports(eq)) == {"equalization"}
    assert isinstance(ke.get_report(eq, "equalization"), ptq.EqualizationReport)
    rounded = ptq.adaround(calibrated, x8, iterations=2, batch_size=8)
    assert isinstance(ke.get_report(rounded, "adaround"), ptq.AdaRoundReport)
    assert ke.get_reports(calibrated) == {}  # the input model gets none
    with pytest.raises(
        KeyError,
        match=r"model 'conv_net' has no 'bias_correction' report \(it has: adaround\)\. "
        r"keras_eff\.ptq\.bias_correction keeps one",
    ):
        ke.get_report(rounded, "bias_correction")
    with pytest.raises(ValueError, match="unknown report kind 'equalisation'; the kinds are: equalization, "):
        ke.get_report(eq, "equalisation")
    assert ke.get_reports(ke.get_report(eq, "equalization")) == {}  # not a model: no reports, no error


def test_process_reports_go_with_their_model():
    import weakref

    eq = ptq.equalize(_model())
    gone = weakref.ref(eq)
    del eq
    gc.collect()
    assert gone() is None  # the report does not keep its model alive (and goes with it)


def _mixed_model():
    """BatchNorm folded, ReLU fused, a Lambda traced, a layer skipped, a max pool inheriting its range."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Lambda(lambda t: t * 0.5, name="half")(x)
    x = layers.Conv2D(6, 3, activation="relu6", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Dense(5, name="hidden")(layers.Flatten(name="flat")(x))
    return keras.Model(inp, layers.Dense(4, name="logits")(x), name="mixed")


def test_quantization_report_is_read_from_the_model_and_survives_save_and_load(x8, tmp_path):
    model = _mixed_model()
    seen = QuantizationReport()  # what quantize_model saw while it rewrote the graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(model, weight_bits=6, skip=["hidden"], _report=seen)
    report = quantization_report(q)
    assert report.quantized == seen.quantized == ["conv", "conv2", "logits"]
    assert report.folded_batchnorm == seen.folded_batchnorm == [("conv", "bn")]
    assert report.fused_activations == seen.fused_activations == [("conv", "relu")]
    assert report.float_layers == seen.float_layers == [("hidden", "skipped by QuantConfig")]
    assert report.traced == seen.traced == ["half"]  # the Lambda, quantized as its Keras op
    assert set(report.inherit_range) == set(seen.inherit_range) == {"pool", "flat"}
    assert report.settings["conv"] == {
        "activation_bits": 8,
        "activation_symmetric": False,
        "weight_bits": 6,
        "weight_symmetric": True,
        "per_channel": True,
        "integer_kernels": "xnnpack",
    }
    ke.calibrate(q, x8, progress=False)
    q.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras", safe_mode=False)
    assert quantization_report(loaded) == report
    assert "keras_eff.quantization.quantization_report(new_model)" in report.float_summary()


def test_sparsity_report_survives_save_and_load(tmp_path):
    pruned = ke.prune_model(_model(), 0.5, skip=["logits"], min_weights=100)
    report = ke.sparsity_report(pruned)
    assert report.skipped == {
        "conv": "not selected (54 weights; below min_weights or named in skip)",
        "logits": "not selected (216 weights; below min_weights or named in skip)",
    }
    pruned.save(tmp_path / "p.keras")
    assert ke.sparsity_report(keras.saving.load_model(tmp_path / "p.keras")) == report


def test_clustering_report_survives_save_and_load(tmp_path):
    clustered = ke.cluster_model(_model(), 4, skip=("conv",))
    report = ke.clustering_report(clustered)
    assert report.clustered_layers == ["conv2", "logits"]
    clustered.save(tmp_path / "c.keras")
    assert ke.clustering_report(keras.saving.load_model(tmp_path / "c.keras")) == report
