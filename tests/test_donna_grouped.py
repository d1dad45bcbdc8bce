"""The grouped inverted bottleneck (``gr_ib``): 1x1 expansion, a kxk grouped convolution of ``group_width`` channels
per group, 1x1 projection. Names and configs round-trip; plain blocks hold a grouped Conv2D and have the block's
shape; the supernet's choices equal the plain blocks built from their weights; BKD, the library and the predictor
handle it; an architecture of gr_ib cells exports to full int8 (one CONV_2D per grouped convolution) and runs in
LiteRT; bad group widths are refused."""

import keras
import numpy as np
import pytest

import keras_eff as ke
import tflite_export as te
from keras_eff.donna import (
    AccuracyPredictor,
    Architecture,
    BKDConfig,
    BlockChoice,
    BlockSpace,
    SearchSpace,
    SupernetBlock,
    build_block,
    build_model,
    build_reference,
    rgb_space,
    tiny_space,
    train_block_library,
)
from keras_eff.donna.blocks import GroupedConv2D, grouped_conv, layer_plan, native_grouped_conv
from keras_eff.donna.measurers import int8_model
from keras_eff.donna.predictor import choice_macs
from keras_eff.donna.space import CELLS, CHOICE_TEMPLATES, choice_template
from keras_eff.donna.supernet import load_block_weights
from tflite_export.model_file import read_graph


def _grouped(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]


def _space(group_width=8, cells=("gr_ib", "dw_ib")):
    common = {"cells": cells, "kernels": (3,), "expansions": (2, 3), "depths": (1, 2), "widths": (0.5, 1.0)}
    return SearchSpace(
        blocks=(
            BlockSpace(16, 2, group_width=group_width, **common),
            BlockSpace(24, 1, group_width=group_width, **common),
        ),
        input_shape=(16, 16, 3),
        num_classes=4,
        stem_channels=16,
        head_channels=32,
        name="grouped",
    )


def test_gr_ib_names_and_configs_round_trip(tmp_path):
    c = BlockChoice(cell="gr_ib", kernel=5, expansion=3, depth=2, se=True, width=0.5)
    assert c.name == "gr_ib-k5-e3-d2-se-relu-w0.5"
    assert BlockChoice.from_name(c.name) == c and BlockChoice.from_config(c.get_config()) == c
    assert "gr_ib" in CELLS and "gr_ib" in CHOICE_TEMPLATES["default"]["cells"]
    block = BlockSpace(32, 2, cells=("gr_ib",), group_width=16)
    assert block.get_config()["group_width"] == 16 and BlockSpace.from_config(block.get_config()) == block
    assert "group_width" not in BlockSpace(32, 2, cells=("gr_ib",)).get_config()  # the default (8) is not written
    space = _space(group_width=4)
    for suffix in (".yaml", ".json"):
        loaded = SearchSpace.load(space.save(tmp_path / f"s{suffix}"))
        assert loaded == space and loaded.blocks[0].group_width == 4 and loaded.fingerprint() == space.fingerprint()
    assert _space(group_width=16).fingerprint() != space.fingerprint()
    arch = Architecture((c, BlockChoice("dw_ib", 3, 2, 1)))
    assert Architecture.parse(str(arch)) == arch
    # the tiny and Fashion-MNIST spaces keep their two cells; the 5-block RGB space searches all three
    assert {c.cell for c in tiny_space().block_choices(0)} == {"dw_ib", "fused_ib"}
    assert {c.cell for c in rgb_space(32).block_choices(0)} == {"dw_ib", "fused_ib", "gr_ib"}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_plain_gr_ib_block_has_grouped_convs_and_the_block_shape(stride, width):
    choice = BlockChoice("gr_ib", 3, 4, 2, True, "swish", width)
    block = build_block(choice, (9, 9, 16), 24, stride, prefix="g")
    assert block.output_shape == (None, -(-9 // stride), -(-9 // stride), 24)
    grouped = _grouped(block)
    assert [layer.name for layer in grouped] == ["g_l0_gr", "g_l1_gr"]
    plan = layer_plan(choice, 16, 24, stride)
    for layer, (_cin, cexp, _cout, s, _) in zip(grouped, plan):
        assert isinstance(layer, GroupedConv2D) and layer.strides == (s, s)
        assert cexp % 8 == 0 and layer.filters == cexp and layer.groups == cexp // 8
        assert tuple(layer.kernel.shape) == (3, 3, 8, cexp)  # 8 input channels per group
    # expansions round up to whole groups: 16 * 3 * 0.5 = 24 channels, 12 * 3 * 0.75 -> 28 -> 32 with 8 per group
    assert layer_plan(BlockChoice("gr_ib", 3, 3, 1, width=0.5), 16, 24, 1) == [(16, 24, 24, 1, False)]
    assert layer_plan(BlockChoice("gr_ib", 3, 3, 1, width=0.75), 12, 12, 1)[0][1] == 32
    assert layer_plan(BlockChoice("dw_ib", 3, 3, 1, width=0.75), 12, 12, 1)[0][1] == 28
    assert _grouped(build_block(BlockChoice("gr_ib", 3, 4, 1), (8, 8, 16), 16, 1, group_width=16))[0].groups == 4


def test_grouped_conv2d_equals_keras_conv2d_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 7, 24)).astype("float32")
    ours = GroupedConv2D(24, 3, strides=2, padding="same", groups=3)
    theirs = keras.layers.Conv2D(24, 3, strides=2, padding="same", groups=3)
    ours.build(x.shape), theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)
    kernel = ours.kernel
    np.testing.assert_allclose(grouped_conv(x, kernel, 2, "same"), keras.ops.conv(x, kernel, 2, "same"), atol=1e-5)
    block = build_block(BlockChoice("gr_ib", 3, 2, 1), (6, 6, 16), 16, 1, prefix="g")
    path = tmp_path / "block.keras"
    block.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("g_l0_gr"), GroupedConv2D)
    np.testing.assert_allclose(loaded(x[:, :6, :6, :16]), block(x[:, :6, :6, :16]), atol=1e-6)
    assert isinstance(native_grouped_conv(), bool)


def test_supernet_gr_ib_choices_equal_plain_blocks_and_train():
    rng = np.random.default_rng(1)
    block = BlockSpace(
        16, 2, cells=("gr_ib",), kernels=(3, 5), expansions=(2, 4), depths=(1, 2), se=(False, True), widths=(0.5, 1.0)
    )
    layer = SupernetBlock(12, block)
    assert tuple(layer._vars["gr_ib/l0/gr"].shape) == (5, 5, 8, 48)  # 12 * 4 channels, 8 per group
    for v in layer.weights:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32") + (1.0 if "gamma" in v.name else 0.0))
    x = rng.normal(size=(16, 6, 6, 12)).astype("float32")
    picked = [
        BlockChoice("gr_ib", 3, 2, 2, True, "relu", 0.5),
        BlockChoice("gr_ib", 5, 4, 1, False, "relu", 1.0),
        BlockChoice("gr_ib", 3, 4, 2, False, "relu", 1.0),
    ]
    for choice in picked:
        stats = layer.calibrate(x, choice, batch_size=8)
        y_super, _ = layer.forward(x, choice, stats)
        plain = build_block(choice, (6, 6, 12), 16, 2, prefix="p")
        weights = layer.extract_weights(choice, stats)
        load_block_weights(plain, "p", weights)
        np.testing.assert_allclose(plain(x, training=False), y_super, atol=2e-4, err_msg=choice.name)
        fresh = SupernetBlock(12, block)  # assign_from writes the plain weights back into the choice's slices
        fresh.assign_from(choice, weights)
        np.testing.assert_allclose(fresh.forward(x, choice, stats)[0], y_super, atol=1e-5)
    # a gradient step on a grouped choice reaches its grouped kernel
    import tensorflow as tf

    choice = picked[2]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer.forward(x, choice)[0]))
    grads = dict(zip([v.path for v in layer.variables_for(choice)], tape.gradient(loss, layer.variables_for(choice))))
    assert all(g is not None for g in grads.values())
    assert float(tf.reduce_max(tf.abs(next(g for p, g in grads.items() if p.endswith("gr_ib_l0_gr"))))) > 0


def test_macs_and_predictor_features_of_grouped_choices():
    space = _space()
    for i, choice in enumerate(
        [BlockChoice("gr_ib", 3, 3, 2, False, "relu", 0.5), BlockChoice("gr_ib", 3, 2, 1, False, "relu", 1.0)]
    ):
        h, w, cin = space.block_input_shapes()[i]
        plain = build_block(choice, (h, w, cin), space.blocks[i].out_channels, space.blocks[i].stride)
        assert choice_macs(space, i, choice) == ke.compression.count_macs(plain).total_macs
    table = [np.linspace(0.2, 0.6, len(space.block_choices(i))) for i in range(2)]
    predictor = AccuracyPredictor(space, table, features="losses+choices", alpha=1.0)
    assert "b0_grouped" in predictor.feature_names()
    arch = Architecture((BlockChoice("gr_ib", 3, 2, 1), BlockChoice("dw_ib", 3, 2, 1)))
    row = dict(zip(predictor.feature_names(), predictor.featurize([arch])[0]))
    assert row["b0_grouped"] == 1.0 and row["b1_grouped"] == 0.0 and row["b0_fused"] == 0.0
    tiny = tiny_space()  # a space without grouped cells keeps its columns (files written before stay readable)
    assert not any(
        "grouped" in n for n in AccuracyPredictor(tiny, [np.ones(32), np.ones(32)], features="choices").feature_names()
    )


def test_block_library_of_grouped_cells_builds_architectures():
    space = _space(cells=("gr_ib",))
    reference = build_reference(space)
    assert len(_grouped(reference)) == 4  # the largest choice: depth 2 in both blocks
    rng = np.random.default_rng(0)
    x = rng.random((96, 16, 16, 3), dtype=np.float32)
    library = train_block_library(
        space,
        reference,
        x[:64],
        x[64:],
        BKDConfig(steps=12, batch_size=16, calibration_samples=32, compile=False),
        verbose=False,
    )
    assert all(np.all(np.isfinite(t)) for t in library.loss_table())
    arch = Architecture((BlockChoice("gr_ib", 3, 2, 2, False, "relu", 0.5), BlockChoice("gr_ib", 3, 3, 1)))
    model = library.build(arch)
    # block 0's second layer expands 8 channels at width 0.5: one group of 8, a plain convolution (groups=1)
    assert [(layer.name, layer.groups) for layer in model.layers if isinstance(layer, GroupedConv2D)] == [
        ("b0_l0_gr", 2),
        ("b0_l1_gr", 1),
        ("b1_l0_gr", 6),
    ]
    assert model.predict(x[:4], verbose=0).shape == (4, 4)


def test_architecture_of_gr_ib_cells_is_full_int8_and_runs_in_litert():
    space = _space()
    arch = Architecture((BlockChoice("gr_ib", 3, 3, 2, False, "relu", 1.0), BlockChoice("gr_ib", 3, 2, 1)))
    keras.utils.set_random_seed(0)
    keras_model = build_model(space, arch)
    x = np.random.default_rng(2).random((8, 16, 16, 3), dtype=np.float32)
    # the float export computes what Keras computes: the grouped convolutions are converted as they are
    float_out = te.TFLiteModel(te.to_tflite(keras_model, quantize=False)).predict(x)
    np.testing.assert_allclose(float_out, keras_model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
    data = int8_model(space, arch)  # to_tflite refuses any float tensor or QUANTIZE/DEQUANTIZE inside
    graph = read_graph(data)
    assert "DEPTHWISE_CONV_2D" not in graph.op_names()
    grouped = [
        graph.tensors[op.inputs[1]]
        for op in graph.ops
        if op.name == "CONV_2D"
        and graph.tensors[op.inputs[1]].shape[1] == 3
        and graph.tensors[op.inputs[1]].shape[-1] == 8
    ]
    # one CONV_2D per grouped convolution, filter (c_out, k, k, 8 = c_in / groups), int8 with a scale per channel
    assert len(grouped) == len(_grouped(keras_model)) == 3
    assert all(t.dtype == np.int8 and len(t.scales) == t.shape[0] and t.quantized_dimension == 0 for t in grouped)
    outs = {}
    for kernels in ("xnnpack", "builtin"):
        tfl = te.TFLiteModel(data, kernels=kernels)
        assert tfl.inputs[0]["dtype"] == np.int8 and tfl.outputs[0]["dtype"] == np.int8
        outs[kernels] = np.asarray(tfl.predict(x, dequantize_outputs=False)).astype(np.int32)
    # the two runtimes round differently (docs/parity.md); on this untrained 10-layer model they differ by a few LSB
    assert outs["xnnpack"].shape == (8, 4) and np.abs(outs["xnnpack"] - outs["builtin"]).max() <= 8


def test_gr_ib_block_through_quantize_model_is_bit_exact():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 16))
    y = build_block(BlockChoice("gr_ib", 3, 2, 1, True), (8, 8, 16), 16, 2, prefix="g")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(y)))
    x = np.random.default_rng(0).random((32, 8, 8, 16), dtype=np.float32)
    qat = ke.quantize_model(model)
    assert not ke.quantization.quantization_report(qat).float_layers
    ke.calibrate(qat, x, progress=False)
    data = te.to_tflite(qat)
    tfl = te.TFLiteModel(data)
    scale, zp = tfl.outputs[0]["quantization"]
    ref = te.runtime.quantize(np.asarray(qat.predict(x, verbose=0)), scale, zp).astype(np.int32)
    raw = np.asarray(tfl.predict(x, dequantize_outputs=False)).astype(np.int32)
    assert np.mean(ref == raw) >= 0.99 and np.abs(ref - raw).max() <= 1


def test_space_from_a_keras_reference_with_grouped_cells():
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for i, (c, s) in enumerate([(8, 2), (12, 2), (20, 1)]):
        x = keras.layers.ReLU(name=f"r{i}")(keras.layers.Conv2D(c, 3, strides=s, padding="same")(x))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    space = SearchSpace.from_reference(
        model,
        ["r0", "r1", "r2"],
        choices={
            "cells": ["gr_ib"],
            "kernels": [3],
            "expansions": [3],
            "depths": [1],
            "widths": [1.0],
            "group_width": 16,
        },
    )
    assert [b.group_width for b in space.blocks] == [16, 16] and SearchSpace.from_config(space.get_config()) == space
    built = build_model(space, space.reference())
    # 8 x 3 = 24 and 12 x 3 = 36 expanded channels round up to 32 and 48: 2 and 3 groups of 16
    assert [(layer.filters, layer.groups) for layer in _grouped(built)] == [(32, 2), (48, 3)]
    assert built.output_shape == (None, 4)


@pytest.mark.parametrize("bad", [6, 0, 12, True, 8.0, "8"])
def test_bad_group_widths_are_refused(bad):
    with pytest.raises(
        ValueError,
        match=r"blocks\[1\]\.group_width: .* is not allowed; a gr_ib cell's grouped "
        r"convolution has 4, 8, 16, 32 channels per group",
    ):
        SearchSpace(blocks=(BlockSpace(16, 2), BlockSpace(16, 1, cells=("gr_ib",), group_width=bad)))
    with pytest.raises(ValueError, match="group_width: .* is not allowed"):
        build_block(BlockChoice("gr_ib"), (8, 8, 16), 16, 1, group_width=bad)
    with pytest.raises(ValueError, match=r"space\.group_width: .* is not allowed"):
        choice_template({"cells": ["gr_ib"], "group_width": bad})
    with pytest.raises(ValueError, match=r"blocks\[0\]\.group_width: .* is not allowed"):
        SearchSpace.from_config({"blocks": [{"out_channels": 8, "cells": ["gr_ib"], "group_width": bad}]})


def test_bad_cell_names_list_the_grouped_cell():
    with pytest.raises(ValueError, match="cell: 'grouped' is not allowed; choose from 'dw_ib', 'fused_ib', 'gr_ib'"):
        BlockChoice(cell="grouped")
    with pytest.raises(ValueError, match="is not a block choice name"):
        BlockChoice.from_name("gr_ib-k3-e4")
