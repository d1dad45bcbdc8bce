"""Structured pruning: N:M (2:4) patterns and channel pruning whose strip really removes filters."""

import keras
import numpy as np
import pytest
from keras import layers

from keras_eff.graph.rewrite import GraphInfo
from keras_eff.models import ZOO, compile_classifier
from keras_eff.pruning import (
    ConstantSparsity,
    PruneWrapper,
    UpdatePruning,
    channel_groups,
    prune_model,
    sparsity_report,
    strip,
    strip_channels,
)


def _set_masks(model, step=0):
    """Runs UpdatePruning's update for one step without training."""
    callback = UpdatePruning()
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_begin(step)
    callback.on_train_end()


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, g.shape),
                    rng.normal(0, 0.3, b.shape),
                    rng.normal(0, 0.3, m.shape),
                    rng.uniform(0.5, 2, v.shape),
                ]
            )


def test_two_four_pattern_in_every_group_of_four(rng):
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    pruned = compile_classifier(prune_model(ZOO["small_cnn"](width=8), structure="2:4", min_weights=0))
    report = sparsity_report(pruned)
    assert "not a multiple of 4" in {r["layer"]: r["status"] for r in report.rows}["conv0"]  # 1 input channel
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    stripped = strip(pruned)
    checked = 0
    for name in ("conv1", "conv2", "logits"):
        kernel = np.asarray(stripped.get_layer(name).kernel)
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)  # consecutive input channels, per position/output
        assert np.all(np.count_nonzero(groups, axis=1) <= 2), name
        assert np.mean(np.count_nonzero(groups, axis=1) == 2) > 0.99, name  # exactly 2 kept (bar true zeros)
        checked += groups.shape[0]
    assert checked > 100
    np.testing.assert_allclose(np.asarray(stripped(x)), np.asarray(pruned(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="N:M pruning has a fixed sparsity of 0.5"):
        prune_model(ZOO["small_cnn"](width=8), structure="2:4", distribution="log")


@pytest.mark.parametrize("name", ["small_cnn", "residual_cnn", "ds_cnn", "concat_cnn"])
def test_channel_strip_is_smaller_with_the_same_outputs(name, rng):
    model = ZOO[name](width=8)
    _randomize_bn(model, rng)
    pruned = prune_model(model, ConstantSparsity(0.5, 0), structure="channels", min_weights=0)
    _set_masks(pruned)
    small = strip_channels(pruned)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(pruned(x)), rtol=1e-4, atol=1e-5)
    assert small.count_params() < 0.6 * model.count_params()
    assert not any(isinstance(layer, PruneWrapper) for layer in small.layers)
    # the filters really are gone, and the BatchNorm after them shrank with them
    wrappers = {w.layer.name: w for w in pruned.layers if isinstance(w, PruneWrapper)}
    for layer_name, w in wrappers.items():
        if w.is_follower:
            continue
        kept = int(np.asarray(w.masks[0]).sum())
        assert small.get_layer(layer_name).kernel.shape[-1] == kept < w.layer.kernel.shape[-1]


def test_channel_masks_zero_batchnorm_and_join_residual_adds(rng):
    model = ZOO["residual_cnn"](width=16)
    _randomize_bn(model, rng)
    pruned = prune_model(model, ConstantSparsity(0.5, 0), structure="channels")
    wrappers = {w.layer.name: w for w in pruned.layers if isinstance(w, PruneWrapper)}
    # stem, res0_conv2 and res1_conv2 meet at the Adds: one group, one mask (stem is small, but must join)
    assert wrappers["stem"].group == wrappers["res0_conv2"].group == wrappers["res1_conv2"].group
    assert wrappers["res0_conv1"].group != wrappers["stem"].group
    _set_masks(pruned)
    mask = np.asarray(wrappers["stem"].masks[0])
    assert mask.sum() == 8
    for member in ("res0_conv2", "res1_conv2", "stem_bn", "res0_bn2", "res1_bn2"):
        np.testing.assert_array_equal(np.asarray(wrappers[member].masks[0]), mask)
    bn = wrappers["res0_bn2"].pruned_weights()
    assert np.all(bn["gamma"][mask == 0] == 0) and np.all(bn["beta"][mask == 0] == 0)
    assert np.any(bn["beta"][mask == 1] != 0)
    # so the pruned channels are exactly zero after BatchNorm, in the masked model itself
    # res0_add holds no state, so the rewrite reuses the user's layer: its own `.output` is the user's model's
    # tensor, and the pruned model's is read from the pruned graph
    add = next(n for n in GraphInfo.of(pruned).nodes if n.operation.name == "res0_add")
    probe = keras.Model(pruned.input, add.output_tensors[0])
    out = np.asarray(probe(rng.random((2, 28, 28, 1), dtype=np.float32)))
    assert np.all(out[..., mask == 0] == 0) and np.any(out[..., mask == 1] != 0)


def test_residual_add_with_the_model_input_is_refused_with_the_reason():
    inputs = keras.Input((8, 8, 4))
    y = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = layers.Add(name="skip")([inputs, y])
    x = layers.Conv2D(8, 3, name="head")(x)
    model = keras.Model(inputs, layers.Dense(2, name="out")(layers.Flatten()(x)))
    groups = {g.name: g for g in channel_groups(model)}
    assert "skip (Add) adds a model input" in groups["conv"].reason
    assert groups["head"].reason is None
    with pytest.raises(ValueError, match=r"cannot prune the channels of layer 'conv': skip \(Add\) adds a model input"):
        prune_model(model, distribution={"conv": 0.5}, structure="channels")
    report = sparsity_report(prune_model(model, 0.5, structure="channels", min_weights=0))
    status = {r["layer"]: r["status"] for r in report.rows}
    assert "model input" in status["conv"] and status["head"] == "pruned"
    with pytest.raises(ValueError, match="layer 'out'.*model output"):
        prune_model(model, distribution={"out": 0.5}, structure="channels")


def test_channel_pruned_model_round_trips_and_trains(tmp_path, rng):
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    pruned = compile_classifier(
        prune_model(ZOO["ds_cnn"](width=8), ConstantSparsity(0.5, 0, frequency=1), structure="channels", min_weights=0)
    )
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    path = str(tmp_path / "channels.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), rtol=1e-5, atol=1e-5)
    small = strip(loaded, remove_pruned_channels=True)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(pruned(x)), rtol=1e-4, atol=1e-5)
    assert small.count_params() < pruned.count_params() / 2


def test_skipping_one_member_of_a_residual_group_keeps_the_group_dense():
    pruned = prune_model(ZOO["residual_cnn"](width=16), 0.5, structure="channels", skip=["stem"])
    status = {r["layer"]: r["status"] for r in sparsity_report(pruned).rows}
    assert "its channels are joined with those of stem" in status["res0_conv2"]
    assert status["stem"].startswith("dense: not selected") and status["res0_conv1"] == "pruned"
