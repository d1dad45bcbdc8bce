"""Plain architectures and supernet blocks: build, run, serialize; a supernet's sub-choice equals the plain block."""

import keras
import numpy as np
import pytest

import keras_eff  # noqa: F401  (registers the serializable layers)
from keras_eff.donna import SupernetBlock, build_block, build_model, tiny_space
from keras_eff.donna.supernet import load_block_weights


def test_every_sampled_architecture_builds_runs_and_round_trips(tmp_path, rng):
    space = tiny_space()
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    for k, arch in enumerate([space.reference()] + space.sample(5, seed=1)):
        model = build_model(space, arch)
        y = model(x, training=False)
        assert y.shape == (4, 10) and np.all(np.isfinite(y))
        path = tmp_path / f"a{k}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(x, training=False), y, atol=1e-5)


def test_supernet_sub_choice_equals_plain_block_with_extracted_weights(rng):
    space = tiny_space()
    block = space.blocks[0]
    in_shape = space.block_input_shapes()[0]
    layer = SupernetBlock(in_shape[2], block)
    # random, non-trivial weights so that slicing mistakes show
    for v in layer.weights:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32") + (1.0 if "gamma" in v.name else 0.0))
    x = rng.normal(size=(32, *in_shape)).astype("float32")
    choices = layer.choices
    picked = [choices[0], choices[-1]] + [choices[i] for i in rng.choice(len(choices), 6, replace=False)]
    for choice in picked:
        stats = layer.calibrate(x, choice, batch_size=16)
        y_super, _ = layer.forward(x, choice, stats)
        plain = build_block(choice, in_shape, block.out_channels, block.stride, prefix="p")
        load_block_weights(plain, "p", layer.extract_weights(choice, stats))
        np.testing.assert_allclose(plain(x, training=False), y_super, atol=2e-4, err_msg=choice.name)
    # choices share weights: a smaller kernel reads the centre of the larger one
    c5 = next(c for c in choices if c.kernel == 5 and c.cell == "dw_ib")
    c3 = next(c for c in choices if c.kernel == 3 and c.cell == "dw_ib")
    w5, w3 = (layer.extract_weights(c, layer.calibrate(x, c)) for c in (c5, c3))
    np.testing.assert_array_equal(w5["l0_dw"][0][1:4, 1:4, : w3["l0_dw"][0].shape[2]], w3["l0_dw"][0])


def test_supernet_layer_serializes(tmp_path, rng):
    space = tiny_space()
    inputs = keras.Input((14, 14, 8))
    model = keras.Model(inputs, SupernetBlock(8, space.blocks[0], active=3, name="sb")(inputs))
    x = rng.random((2, 14, 14, 8), dtype=np.float32)
    model.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    assert loaded.get_layer("sb").active == space.blocks[0].choices()[3]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        SupernetBlock(8, space.blocks[0], active=999)
