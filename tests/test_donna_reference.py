"""DONNA with the user's own reference model and data: keras.applications MobileNetV2 and EfficientNetB0 (default
arguments, weights=None, classes=10, 32 px) and a hand-built model; boundaries proposed or named, refused with the
candidates; the stem and head keep the reference's weights; .npz and image-folder data; nothing written before the
inputs are checked."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from keras_eff import cli
from keras_eff.donna import SearchSpace, build_model, builtin_config
from keras_eff.donna.backbone import candidate_boundaries, logits_model, propose_boundaries
from keras_eff.donna.data import load_data
from keras_eff.donna.reference import block_features, stem_head_weights


def hand_built(nested=False):
    inp = keras.Input((16, 16, 3), name="img")
    x = inp
    for i, (c, s) in enumerate([(8, 2), (12, 2), (16, 2)]):
        x = layers.Conv2D(c, 3, strides=s, padding="same", use_bias=False, name=f"c{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"r{i}")(x)
        if nested and i == 1:
            x = keras.Sequential(
                [keras.Input(x.shape[1:]), layers.Conv2D(12, 1, name="inner_conv"), layers.ReLU(name="inner_relu")],
                name="inner",
            )(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="pred")(x), name="hand")


@pytest.fixture(scope="module")
def mobilenet():
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)


@pytest.fixture(scope="module")
def efficientnet():
    return keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10)


def check_stem_and_head_are_the_reference(model, space):
    """An architecture with the library's stem/head weights reproduces the reference at both ends."""
    ref, dropped = logits_model(model)
    assert dropped  # keras.applications and hand_built end in softmax; DONNA works on logits
    x = np.random.default_rng(0).random((3, *space.input_shape), dtype=np.float32) * 255
    feats = block_features(ref, space, x)
    assert [f.shape[1:] for f in feats] == [tuple(s) for s in space.block_input_shapes()]
    arch = space.sample(1, seed=2)[0]
    cand = build_model(space, arch)
    w = stem_head_weights(ref, space)
    cand.get_layer("stem").set_weights(w["stem"])
    cand.get_layer("head").set_weights(w["head"])
    np.testing.assert_allclose(cand.get_layer("stem").predict(x, verbose=0), feats[0], atol=1e-5)
    logits = cand.get_layer("head").predict(feats[-1], verbose=0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.softmax(logits)), model.predict(x, verbose=0), atol=1e-5
    )
    assert cand.output_shape == (None, space.num_classes)


def test_mobilenetv2_boundaries_are_proposed_at_its_stages(mobilenet):
    assert propose_boundaries(mobilenet) == [
        "expanded_conv_project_BN",
        "block_2_add",
        "block_5_add",
        "block_9_add",
        "block_12_add",
        "block_15_add",
        "block_16_project_BN",
    ]
    space = SearchSpace.from_reference(mobilenet, choices="tiny")
    assert [(b.out_channels, b.stride) for b in space.blocks] == [
        (24, 2),
        (32, 2),
        (64, 2),
        (96, 1),
        (160, 2),
        (320, 1),
    ]
    assert space.input_shape == (32, 32, 3) and space.num_classes == 10
    check_stem_and_head_are_the_reference(mobilenet, space)
    again = SearchSpace.from_config(json.loads(json.dumps(space.get_config())))
    assert again.fingerprint() == space.fingerprint()


def test_efficientnetb0_boundaries_and_weights(efficientnet):
    assert propose_boundaries(efficientnet) == [
        "block1a_project_bn",
        "block2b_add",
        "block3b_add",
        "block4c_add",
        "block5c_add",
        "block6d_add",
        "block7a_project_bn",
    ]
    space = SearchSpace.from_reference(efficientnet, ["block2b_add", "block3b_add", "block4c_add"], choices="tiny")
    assert [(b.out_channels, b.stride) for b in space.blocks] == [(40, 2), (80, 2)]
    check_stem_and_head_are_the_reference(efficientnet, space)  # Rescaling + Normalization stay in the stem


def test_hand_built_model_and_named_blocks():
    model = hand_built()
    assert propose_boundaries(model) == ["r0", "r1", "r2"]  # a plain CNN: the end of each shape
    space = SearchSpace.from_reference(model, ["r0", "r1", "r2"], choices="tiny")
    check_stem_and_head_are_the_reference(model, space)


def test_bad_boundaries_are_refused_with_the_candidates(mobilenet):
    with pytest.raises(ValueError, match=r"has no layer 'block_99_add'. Candidate boundaries .*block_2_add 8x8x24"):
        SearchSpace.from_reference(mobilenet, ["expanded_conv_project_BN", "block_99_add"])
    with pytest.raises(ValueError, match="'block_2_expand' cannot be a block boundary: a skip connection"):
        SearchSpace.from_reference(mobilenet, ["block_1_project_BN", "block_2_expand", "block_5_add"])
    with pytest.raises(ValueError, match="shapes do not chain"):  # stride 4 between two boundaries
        SearchSpace.from_reference(mobilenet, ["expanded_conv_project_BN", "block_5_add"])
    with pytest.raises(ValueError, match="comes before"):
        SearchSpace.from_reference(mobilenet, ["block_5_add", "block_2_add"])
    pool = next(
        layer.name
        for layer in mobilenet.layers  # Keras numbers the name by what the process built before
        if type(layer).__name__ == "GlobalAveragePooling2D"
    )
    with pytest.raises(ValueError, match="output is not an image tensor"):
        SearchSpace.from_reference(mobilenet, ["block_16_project_BN", pool])


def test_nested_models_sub_layers_are_refused_the_nested_model_itself_works():
    model = hand_built(nested=True)
    with pytest.raises(ValueError, match="'inner_relu' is inside the nested model 'inner'"):
        SearchSpace.from_reference(model, ["r0", "inner_relu", "r2"])
    space = SearchSpace.from_reference(model, ["r0", "inner", "r2"], choices="tiny")
    assert [b.out_channels for b in space.blocks] == [12, 16]
    assert "inner" in [b.name for b in candidate_boundaries(model)]
    with pytest.raises(ValueError, match="subclassed model"):

        class Sub(keras.Model):
            def call(self, x):
                return x

        SearchSpace.from_reference(Sub())


def test_image_folder_is_resized_and_split(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (x, y), (xv, yv) = load_data({"path": str(tmp_path), "val_split": 0.2}, (16, 16, 3))
    assert x.shape[1:] == (16, 16, 3) and len(x) + len(xv) == 10 and len(xv) == 2
    assert set(y.tolist()) | set(yv.tolist()) <= {0, 1} and x.dtype == np.float32 and x.max() > 1
    with pytest.raises(ValueError, match=r"x_train: images of shape \(8, 8, 3\), but the model takes"):
        load_data({"path": str(tmp_path), "image_size": 8}, (16, 16, 3))


def small_config():
    cfg = builtin_config("tiny")
    cfg["accuracy_model"] = {
        "bkd": {"steps": 8, "batch_size": 32, "calibration_samples": 32, "compile": False},
        "bkd_samples": 150,
        "val_samples": 60,
        "n_archs": 3,
        "finetune": {"steps": 3, "batch_size": 32},
        "finetune_samples": 150,
    }
    cfg["search"] = {"pop_size": 3, "max_evals": 4, "timeout_s": 60.0}
    cfg["scenarios"][0]["measurers"] = [{"kind": "litert", "runs": 5, "warmup": 1, "rounds": 1}]
    cfg["finetune"] = {"top_k": 1, "samples": 100, "distill": {"epochs": 1, "batch_size": 32}}
    return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    model = hand_built()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((360, 16, 16, 3), dtype=np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) * 97).astype(np.int64) % 4
    model.fit(x, y, epochs=1, verbose=0)
    model.save(d / "hand.keras")
    np.savez(d / "data.npz", x_train=x[:300], y_train=y[:300], x_val=x[300:], y_val=y[300:])
    (d / "small.json").write_text(json.dumps(small_config()))
    return d, model, x


@pytest.mark.parametrize(
    "arrays,needle",
    [
        (dict(x_train=1, y_train=1, x_val=1), "lacks the array(s) y_val"),
        (dict(x_train="str", y_train=1, x_val=1, y_val=1), "x_train: images must be numeric"),
        (dict(x_train=1, y_train=1, x_val=1, y_val="float"), "y_val: labels must be integer class indices"),
        (dict(x_train=1, y_train="ten", x_val=1, y_val=1), "labels range over 0..9, but the model has 4 classes"),
    ],
)
def test_bad_data_is_named_and_nothing_is_written(files, tmp_path, capsys, arrays, needle):
    d, _, x = files
    rng = np.random.default_rng(1)
    make = {
        "x_train": lambda v: x[:200] if v == 1 else np.full((4, 16, 16, 3), "a"),
        "x_val": lambda v: x[:80],
        "y_train": lambda v: rng.integers(0, 4, 200) if v == 1 else np.arange(200) % 10,
        "y_val": lambda v: rng.integers(0, 4, 80) if v == 1 else rng.random(80),
    }
    np.savez(tmp_path / "bad.npz", **{k: make[k](v) for k, v in arrays.items()})
    out = tmp_path / "out"
    code = cli.main(
        [
            "donna",
            "run",
            "--config",
            str(d / "small.json"),
            "--reference",
            str(d / "hand.keras"),
            "--data",
            str(tmp_path / "bad.npz"),
            "--out",
            str(out),
        ]
    )
    assert code == cli.EXIT_BAD_INPUT
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_bad_reference_and_blocks_from_the_cli_write_nothing(files, tmp_path, capsys):
    d, _, _ = files
    out = tmp_path / "out"
    base = ["donna", "run", "--config", str(d / "small.json"), "--data", str(d / "data.npz"), "--out", str(out)]
    assert cli.main(base + ["--reference", str(d / "hand.keras"), "--blocks", "r0,gap"]) == cli.EXIT_BAD_INPUT
    assert "'gap' cannot be a block boundary" in capsys.readouterr().err
    assert cli.main(base + ["--reference", str(tmp_path / "none.keras")]) == cli.EXIT_BAD_INPUT
    assert "reference.path" in capsys.readouterr().err
    assert cli.main(base) == cli.EXIT_BAD_INPUT  # Fashion-MNIST's model space cannot read 16x16x3 data
    assert "x_train: images of shape (16, 16, 3)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_cli_run_with_own_reference_and_npz(files, tmp_path):
    d, model, x = files
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "donna",
                "run",
                "--config",
                str(d / "small.json"),
                "--reference",
                str(d / "hand.keras"),
                "--blocks",
                "r0,r1,r2",
                "--data",
                str(d / "data.npz"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["space"]["backbone"]["boundaries"] == ["r0", "r1", "r2"]
    ref = keras.saving.load_model(out / "reference.keras")  # the user's weights, as logits: never retrained
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(ref.predict(x[:20], verbose=0)))
    np.testing.assert_allclose(probs, model.predict(x[:20], verbose=0), atol=1e-5)
    chosen = keras.saving.load_model(out / "finetune/litert_1thread/model_0.keras")
    assert chosen.output_shape == (None, 4) and chosen.get_layer("stem") is not None
    assert json.loads((out / "finetune/litert_1thread/results.json").read_text())["models"][0]["accuracy"] > 0
