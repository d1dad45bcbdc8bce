"""The DONNA search benchmark's own parts (benchmarks/donna_search.py): the reference family initialized from the
trained reference's weights, and the compute that matches the family's training to DONNA's."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from benchmarks import donna_search as bench
from keras_eff.donna import (
    Architecture,
    BKDConfig,
    DonnaConfig,
    FinetuneConfig,
    build_model,
    build_reference,
    tiny_space,
)


def _random_reference(space, seed=0):
    """The space's reference with every weight set to distinct random values (a fresh BatchNorm's ones and zeros
    would make a wrong slice look right)."""
    keras.utils.set_random_seed(seed)
    ref = build_reference(space)
    rng = np.random.default_rng(seed)
    ref.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in ref.get_weights()])
    return ref


def _member(space, label):
    return next((sp, arch) for lab, sp, arch in bench.family(space, [0.5, 1.0]) if lab == label)


def test_family_member_takes_the_reference_slices():
    space = tiny_space()
    ref = _random_reference(space)
    before = [w.copy() for w in ref.get_weights()]
    sp, arch = _member(space, "w0.5 d1")
    keras.utils.set_random_seed(1)
    model = build_model(sp, arch)
    report = bench.init_from_reference(model, ref)

    assert report["fresh"] == [], report
    ref_layers = {layer.name: layer for layer in ref.layers}
    names = [layer.name for layer in model.layers if layer.weights]
    assert not [n for n in names if "_l1_" in n]  # depth 1: only the first layer of each block
    assert sorted(report["copied"]) == sorted(names)
    checked = sliced = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        for dst, src in zip(layer.get_weights(), ref_layers[layer.name].get_weights()):
            np.testing.assert_array_equal(dst, src[tuple(slice(0, n) for n in dst.shape)])
            checked += 1
            sliced += dst.shape != src.shape
    assert checked == len(model.get_weights())
    assert sliced >= checked // 2  # width 0.5: most weights are leading slices of larger ones
    # the stem at width 0.5 keeps the reference's first 4 of 8 filters; the logits its first 12 of 24 inputs
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").get_weights()[0], ref_layers["stem_conv"].kernel[..., :4]
    )
    assert model.get_layer("logits").get_weights()[0].shape == (12, 10)
    # the reference is not changed
    for a, b in zip(before, ref.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_layers_that_cannot_be_sliced_keep_their_initialization():
    space = tiny_space()
    ref = _random_reference(space)
    sp, arch = _member(space, "w1 d1")
    # kernel 3 where the reference has 5: a 5x5 kernel is not sliced into a 3x3 one (spatial sizes must agree)
    arch = Architecture(tuple(replace(c, kernel=3) for c in arch.choices))
    keras.utils.set_random_seed(1)
    model = build_model(sp, arch)
    fresh_before = {layer.name: layer.get_weights() for layer in model.layers}
    report = bench.init_from_reference(model, ref)

    assert sorted(report["fresh"]) == ["b0_l0_dw", "b1_l0_dw"]
    for name in report["fresh"]:
        for a, b in zip(fresh_before[name], model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # width 1, depth 1: the copied layers are the reference's own, unsliced
    np.testing.assert_array_equal(
        model.get_layer("b1_l0_project").get_weights()[0], ref.get_layer("b1_l0_project").get_weights()[0]
    )


def test_family_compute_matches_donna_per_model_compute():
    cfg = DonnaConfig(
        reference_epochs=1,
        bkd=BKDConfig(steps=100, batch_size=32),
        bkd_samples=100,
        val_samples=10,
        n_archs=4,
        finetune=FinetuneConfig(steps=10, batch_size=16),
        finetune_samples=100,
    )
    c = bench.training_compute(cfg, n_blocks=3, k=5, epochs=2, n_train=1000)
    assert c["bkd"] == 100 * 32 * 3
    assert c["stage_b"] == 4 * 10 * 16
    assert c["stage_d"] == 2 * 1000
    assert c["donna_per_model"] == pytest.approx(2000 + (9600 + 640) / 5)
    assert c["family_epochs"] == 5  # ceil(4048 / 1000)
    assert c["family_per_model"] == 5000 >= c["donna_per_model"]
