"""LiteRT's three kernel choices (XNNPACK, optimized built-in, reference) and how each compares with TFLite Micro."""

import json

import numpy as np
import pytest

import tflite_export as te


def _tiny_resnet(seed=0, width=8):
    """Three residual blocks joined by ADD: the op whose int8 ties LiteRT's optimized kernels round otherwise than
    TFLite Micro."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(inp)
    for i in range(3):
        y = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"res{i}_a")(x)
        y = layers.Conv2D(width, 3, padding="same", name=f"res{i}_b")(y)
        x = layers.ReLU(name=f"res{i}_relu")(layers.Add(name=f"res{i}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="tiny_resnet")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((64, 16, 16, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def resnet_tflite(images):
    import keras_eff as ke

    q = ke.quantize_model(_tiny_resnet())
    ke.calibrate(q, images, progress=False)
    data = te.to_tflite(q)
    assert te.read_graph(data).op_names().count("ADD") == 3
    return data


def test_reference_kernels_can_be_selected_and_run(resnet_tflite, images):
    outs = {}
    for kernels in ("xnnpack", "builtin", "reference"):
        tfl = te.TFLiteModel(resnet_tflite, kernels=kernels)
        assert tfl.kernels == kernels
        outs[kernels] = tfl.predict(images, dequantize_outputs=False)
        assert outs[kernels].shape == (64, 10) and outs[kernels].dtype == np.int8
        te.make_interpreter(resnet_tflite, kernels=kernels).invoke()
    # the same file, other kernels: within a step of each other, and not all the same (the option reaches LiteRT)
    assert np.abs(outs["reference"].astype(int) - outs["builtin"].astype(int)).max() <= 2
    assert not np.array_equal(outs["reference"], outs["builtin"])
    # kernels= overrides use_xnnpack; the old flag still chooses between the other two
    assert te.TFLiteModel(resnet_tflite, use_xnnpack=True, kernels="reference").kernels == "reference"
    assert te.TFLiteModel(resnet_tflite, use_xnnpack=False).kernels == "builtin"
    assert te.TFLiteModel(resnet_tflite).kernels == "xnnpack"


def test_unknown_kernels_are_refused_naming_the_choices(resnet_tflite):
    with pytest.raises(ValueError, match="'xnnpack', 'builtin', 'reference'"):
        te.TFLiteModel(resnet_tflite, kernels="ref")
    with pytest.raises(ValueError, match="kernels must be one of"):
        te.make_interpreter(resnet_tflite, kernels="micro")


def test_compare_runs_on_the_kernels_asked_for(resnet_tflite, images):
    import keras_eff as ke

    q = ke.quantize_model(_tiny_resnet())
    ke.calibrate(q, images, progress=False)
    cmp = te.compare(q, resnet_tflite, images, kernels="reference")
    assert cmp.n == 64 and cmp.max_lsb_diff is not None


def test_reference_kernels_agree_with_micro_at_least_as_often_as_builtin(resnet_tflite, images):
    pytest.importorskip("tflite_micro")
    arena = te.find_arena_size(resnet_tflite).recommended_bytes
    checks = {k: te.check_micro(resnet_tflite, images, arena_size=arena, kernels=k) for k in ("builtin", "reference")}
    ref, builtin = checks["reference"], checks["builtin"]
    assert ref.kernels == "reference" and ref.reference == "LiteRT reference kernels"
    assert builtin.kernels == "builtin" and "reference" in ref.as_dict() and ref.as_dict()["kernels"] == "reference"
    assert ref.bit_exact_samples >= builtin.bit_exact_samples, (ref, builtin)
    assert ref.exact_values >= builtin.exact_values, (ref, builtin)
    assert ref.max_lsb_diff <= 1
    assert te.check_micro(resnet_tflite, images[:4], arena_size=arena, use_xnnpack=True).kernels == "xnnpack"


def test_cli_verify_compares_with_the_kernels_asked_for(resnet_tflite, images, tmp_path, capsys):
    pytest.importorskip("tflite_micro")
    from keras_eff import cli

    (tmp_path / "m.tflite").write_bytes(resnet_tflite)
    np.save(tmp_path / "x.npy", images[:16])
    out = tmp_path / "check.json"
    rc = cli.main(
        [
            "verify",
            str(tmp_path / "m.tflite"),
            "--data",
            str(tmp_path / "x.npy"),
            "--kernels",
            "reference",
            "-o",
            str(out),
        ]
    )
    assert rc == cli.EXIT_OK, capsys.readouterr().err
    meta = json.loads(out.read_text())
    assert meta["kernels"] == "reference" and meta["reference"] == "LiteRT reference kernels" and meta["n"] == 16
    assert "LiteRT reference kernels" in capsys.readouterr().out
    assert cli.main(["verify", str(tmp_path / "m.tflite"), "--kernels", "micro"]) == cli.EXIT_BAD_INPUT
