"""The width multiplier (0.5 / 0.75 / 1.0): a narrower choice reads the first channels of the supernet's weights and
equals the plain block built from them; names and configs round-trip; bad widths are refused."""

import numpy as np
import pytest

from keras_eff.donna import BlockChoice, BlockSpace, SearchSpace, SupernetBlock, build_block, build_model, rgb_space
from keras_eff.donna.blocks import layer_plan
from keras_eff.donna.supernet import load_block_weights


def test_width_choices_equal_plain_blocks_with_extracted_weights():
    rng = np.random.default_rng(0)
    block = BlockSpace(
        16,
        1,
        cells=("dw_ib", "fused_ib"),
        kernels=(3,),
        expansions=(2, 4),
        depths=(1, 2),
        se=(False, True),
        widths=(0.5, 0.75, 1.0),
    )
    layer = SupernetBlock(12, block)
    for v in layer.weights:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32") + (1.0 if "gamma" in v.name else 0.0))
    x = rng.normal(size=(16, 6, 6, 12)).astype("float32")
    picked = [c for c in layer.choices if c.depth == 2 and c.se and c.width < 1] + [layer.choices[0]]
    params = {}
    for choice in picked:
        stats = layer.calibrate(x, choice, batch_size=8)
        y_super, _ = layer.forward(x, choice, stats)
        plain = build_block(choice, (6, 6, 12), 16, 1, prefix="p")
        load_block_weights(plain, "p", layer.extract_weights(choice, stats))
        np.testing.assert_allclose(plain(x, training=False), y_super, atol=2e-4, err_msg=choice.name)
        params[choice.name] = plain.count_params()
    full = BlockChoice("dw_ib", 3, 4, 2, True, "relu", 1.0)
    half = BlockChoice("dw_ib", 3, 4, 2, True, "relu", 0.5)
    assert layer_plan(half, 12, 16, 1) == [(12, 24, 8, 1, False), (8, 16, 16, 1, False)]
    assert layer_plan(full, 12, 16, 1) == [(12, 48, 16, 1, False), (16, 64, 16, 1, True)]
    stats = layer.calibrate(x, full)
    plain_full = build_block(full, (6, 6, 12), 16, 1, prefix="p")
    load_block_weights(plain_full, "p", layer.extract_weights(full, stats))
    assert params[half.name] < plain_full.count_params() / 2


def test_width_names_configs_and_checks():
    c = BlockChoice(width=0.75)
    assert c.name == "dw_ib-k3-e4-d1-nose-relu-w0.75" and BlockChoice.from_name(c.name) == c
    assert BlockChoice.from_name("dw_ib-k3-e4-d1-nose-relu").width == 1.0  # old names read as width 1
    assert BlockChoice(width=1).width == 1.0
    with pytest.raises(ValueError, match="width: 0.6 is not allowed; choose from 0.5, 0.75, 1.0"):
        BlockChoice(width=0.6)
    space = SearchSpace(blocks=(BlockSpace(8, 2, widths=(0.5, 1.0), depths=(1, 2)),), input_shape=(16, 16, 1))
    assert space.size() == 4 and space.reference().choices[0].width == 1.0
    assert SearchSpace.from_config(space.get_config()) == space
    model = build_model(space, space.sample(4)[3])
    assert model.output_shape == (None, 10)
    with pytest.raises(ValueError, match=r"blocks\[0\]\.widths: 2.0 is not allowed"):
        SearchSpace(blocks=(BlockSpace(8, 2, widths=(2.0,)),))


def test_rgb_space_has_five_blocks_and_builds():
    space = rgb_space(32)
    assert len(space.blocks) == 5 and space.input_shape == (32, 32, 3)
    assert len(space.block_choices(0)) == 216 and {c.width for c in space.block_choices(0)} == {0.5, 0.75, 1.0}
    assert {c.cell for c in space.block_choices(0)} == {"dw_ib", "fused_ib", "gr_ib"}
    assert build_model(space, space.sample(1, seed=3)[0]).output_shape == (None, 10)
    with pytest.raises(ValueError, match="size: 128 must be an integer from 32 to 96"):
        rgb_space(128)
