"""Integer inference: at inference a quantized model computes what LiteRT's default int8 kernels compute, bit for bit,
while training and export keep the fake-quant graph."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import set_integer_kernels


def _float_path(model, x):
    """The plain fake-quant simulation: what the model computed before integer inference (and what it exports)."""
    with te.export_view(model):  # an eager call: a predict function traced before would hold the integer path
        return np.asarray(model(x, training=False))


def _lsb(model, data, x, reference=None):
    tfl = te.TFLiteModel(data)
    out = tfl.outputs[0]
    scale, zp = out["quantization"]
    ref = model.predict(x, verbose=0) if reference is None else reference
    raw = tfl.predict(x, dequantize_outputs=False).astype(np.int32)
    return np.abs(te.quantize(ref, scale, zp).astype(np.int32) - raw)


def _conv_net():
    """conv + BN + ReLU6, depthwise + BN + ReLU6 (both requantized in float32), a mean over an even 4×4 window
    (exact ties, rounded half to even), dense logits."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(12, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


@pytest.fixture(scope="module")
def conv_export():
    keras.utils.set_random_seed(0)
    model = _conv_net()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BN statistics of a trained model, so that folding changes the kernels
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, c), rng.normal(0, 0.3, c), rng.normal(0, 0.2, c), rng.uniform(0.2, 2, c)]
            )
    x = rng.uniform(-1, 1, (400, 8, 8, 3)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:200], progress=False)
    return qat, te.to_tflite(qat), x


def test_conv_net_is_bit_exact_with_litert(conv_export):
    qat, data, x = conv_export
    assert te.find_float_islands(data) == []
    assert _lsb(qat, data, x).max() == 0
    # the float simulation it replaces is not: ties of the 4×4 mean and float rounding near .5 flip LSBs
    assert _lsb(qat, data, x, reference=_float_path(qat, x)).max() >= 1


def test_mean_rounds_with_its_odd_zero_point_as_litert_does():
    # a mean whose input and output share one grid (scale ratio exactly 1/16: a tie on one value in 16) and whose
    # zero point is odd: XNNPACK adds the zero point before rounding half to even, and the dense layer after the mean
    # turns each flipped tie into several LSB
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(8, 1, name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(4, name="logits")(x))
    x = np.random.default_rng(1).normal(0, 1, (400, 4, 4, 2)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:200], progress=False)
    shared = qat.get_layer("quant_gap").output_quantizer
    shared.range_min.assign(-1.0)
    shared.range_max.assign(2.0)  # scale 3/255, zero point −128 + 85 = −43
    data = te.to_tflite(qat)
    graph = te.read_graph(data)
    mean = next(op for op in graph.ops if op.name == "MEAN")
    for i in (mean.inputs[0], mean.outputs[0]):
        assert graph.tensors[i].scales[0] == pytest.approx(3 / 255) and graph.tensors[i].zero_points[0] == -43
    assert int(shared.tflite_zero_point()) == -43
    assert _lsb(qat, data, x).max() == 0


def test_hard_swish_matches_litert_on_every_input_code():
    inputs = keras.Input((256,))
    model = keras.Model(inputs, layers.Activation("hard_silu")(inputs))
    for lo, hi in [(-5.0, 7.0), (-3.2, 2.1), (-9.0, 30.0)]:
        x = np.linspace(lo, hi, 256, dtype=np.float32)[None]
        qat = ke.quantize_model(model)
        ke.calibrate(qat, x, progress=False)
        data = te.to_tflite(qat)
        assert "HARD_SWISH" in te.read_graph(data).op_names()
        codes = np.arange(-128, 128, dtype=np.int8)[None]  # every int8 input, straight into the file
        raw = te.TFLiteModel(data).run(codes, raw_inputs=True, dequantize_outputs=False)
        s_in, z_in = te.TFLiteModel(data).inputs[0]["quantization"]
        s_out, z_out = te.TFLiteModel(data).outputs[0]["quantization"]
        sim = qat.predict((codes.astype(np.float32) - z_in) * s_in, verbose=0)
        assert np.array_equal(te.quantize(sim, s_out, z_out), raw), (lo, hi)


def test_hard_swish_onto_a_pooling_grid_matches_litert():
    # a hard-swish whose only consumer is a global average pooling computes onto the pooling's shared grid (the file
    # has no range of its own there); each channel pools two equal values, so the mean shows every code as it is
    inputs = keras.Input((1, 2, 256))
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(layers.Activation("hard_swish", name="hs")(inputs)))
    x = np.repeat(np.linspace(-4.0, 9.0, 256, dtype=np.float32)[None, None, None, :], 2, axis=2)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x, progress=False)
    assert qat.get_layer("quant_hs").output_quantizer is None
    data = te.to_tflite(qat)
    assert te.read_graph(data).op_names() == ["HARD_SWISH", "MEAN"]
    assert _lsb(qat, data, x).max() == 0
    assert _lsb(qat, data, x, reference=_float_path(qat, x)).max() >= 1  # what the float path got wrong


# Input integers (grid step 1/16, zero point 0) of 6 rows in 200,000 random ones where the float softmax, put on the
# 1/256 grid, misses LiteRT's int8 SOFTMAX (its float32 exp table and sum) by one step.
_SOFTMAX_HARD_ROWS = [
    [-31, 6, -40, 23, 20, -35, 36, 18, -3, -40, -14, 1, 21, 27, 29, 12],
    [-18, 27, -2, 5, -19, 8, 6, 7, -13, 12, -26, 12, 29, -31, 13, 32],
    [26, -40, -31, -1, 23, 0, 14, 19, -7, 2, -17, 34, -34, -13, 35, 19],
    [-36, 17, 13, 30, 27, -36, -2, -22, 11, -8, 26, 9, 39, -18, -13, -29],
    [35, -5, -3, -21, -10, 24, 23, -6, 27, -1, -38, -17, 33, -9, 0, 34],
    [-40, -25, -27, -27, 31, -14, -9, 10, 12, -4, -31, -39, -36, -4, 8, 29],
]


@pytest.mark.parametrize("form", ["activation", "layer", "dense"])
def test_softmax_is_litert_int8_softmax_where_the_float_one_misses(form, rng):
    """A softmax at inference with integers computes as LiteRT's int8 SOFTMAX (built-in on both kernel sets: XNNPACK
    takes only float ones): every output bit-exact on rows where the float softmax was a step off."""
    inputs = keras.Input((16,))
    if form == "activation":
        outputs = layers.Activation("softmax")(inputs)
    elif form == "layer":
        outputs = layers.Softmax()(inputs)
    else:  # a classifier head: the softmax after a Dense, on the Dense's grid
        dense = layers.Dense(16, activation="softmax", kernel_initializer="identity", bias_initializer="zeros")
        outputs = dense(inputs)
    model = keras.Model(inputs, outputs)
    hard = np.asarray(_SOFTMAX_HARD_ROWS, np.float32) / 16.0
    x = np.concatenate([hard, rng.integers(-40, 40, (58, 16)).astype(np.float32) / 16.0])
    extremes = np.stack([np.full(16, -8.0), np.full(16, 127 / 16.0)]).astype(np.float32)  # grid step 1/16
    qat = ke.quantize_model(model)
    ke.calibrate(qat, np.concatenate([x, extremes]), progress=False)
    data = te.to_tflite(qat)
    for kernels in ("xnnpack", "builtin"):
        set_integer_kernels(qat, kernels)
        cmp = te.compare(qat, data, x, kernels=kernels)
        assert cmp.max_lsb_diff == 0, (kernels, str(cmp))


def test_mean_onto_a_grid_a_hair_wider_than_its_input_is_xnnpacks_mean():
    """XNNPACK's int8 MEAN sums the raw codes and folds the input zero point into the output's (s' = s_in/s_out · 1/n,
    z' = z_out − n·z_in·s', in float32). Where the two grids differ by a hair (a squeeze's range calibrated to its
    input's, as in EfficientNetV2B0's squeeze-excite blocks) the exact ties move below a half, which the
    zero-point-free formula did not follow: outputs were one off."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="features")(inputs)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = layers.Conv2D(32, 1, activation="sigmoid", name="excite")(s)
    model = keras.Model(inputs, layers.Flatten()(layers.Multiply(name="scale")([x, s])))
    data = np.random.default_rng(3).normal(0, 1, (512, 4, 4, 3)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, data[:128], progress=False)
    squeeze = qat.get_layer("quant_squeeze")
    source, target = squeeze._input_grid(), squeeze.output_quantizer  # the MEAN reads its producer's grid
    target.range_min.assign(source.range_min)
    target.range_max.assign(source.range_max * (1 + 3e-7))
    assert float(source.tflite_scale()) != float(target.tflite_scale())
    cmp = te.compare(qat, te.to_tflite(qat), data)
    assert cmp.max_lsb_diff == 0, str(cmp)


def test_training_and_export_keep_the_fake_quant_graph(conv_export):
    qat, _, x = conv_export

    def op_types(training, exporting):
        fn = tf.function(lambda t: qat(t, training=training))
        if exporting:
            with te.export_view(qat):
                graph = fn.get_concrete_function(tf.TensorSpec((None, 8, 8, 3))).graph
        else:
            graph = fn.get_concrete_function(tf.TensorSpec((None, 8, 8, 3))).graph
        types = {op.type for op in graph.get_operations()}
        for f in graph._functions.values():
            types.update(node.op for node in f.definition.node_def)
        return types

    assert "Round" in op_types(False, False)  # inference: integers and XNNPACK's rounding
    assert "Round" not in op_types(False, True)  # export: fake-quant only
    assert "Round" not in op_types(True, False)  # training: fake-quant with straight-through gradients
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(qat(x[:8], training=True) ** 2)
    grads = tape.gradient(loss, qat.trainable_weights)
    assert all(g is not None for g in grads) and any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    wrapper = next(l for l in qat.layers if isinstance(l, ke.quantization.QuantizeWrapper) and l.has_kernel)
    assert not wrapper._integer(True, wrapper.output_quantizer) and wrapper._integer(False, wrapper.output_quantizer)
    with wrapper.export_view():
        assert not wrapper._integer(False, wrapper.output_quantizer)
    assert wrapper._integer(False, wrapper.output_quantizer)  # the view ends with the block


def test_nested_model_inputs_find_their_range_after_loading(tmp_path):
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, layers.Conv2D(6, 3, activation="relu")(inner_in), name="inner")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(inner(inputs)))
    x = np.random.default_rng(1).uniform(-1, 1, (64, 8, 8, 3)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x, progress=False)
    conv = qat.get_layer("inner").layers[1]
    assert conv._input_grid() is qat.layers[1]  # across the nested model's input
    data = te.to_tflite(qat)
    assert _lsb(qat, data, x).max() == 0
    path = tmp_path / "nested.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)  # no linking call: the references are saved with the wrappers
    assert loaded.get_layer("inner").layers[1]._input_grid() is loaded.layers[1]
    assert _lsb(loaded, data, x).max() == 0


def _squeeze_excite_net():
    """The grids of a MobileNetV3 head: a hard-swish whose only consumer is a global average pooling (its output lies
    on the pooling's shared grid), a mean over a 1×1 window that the converter drops, a conv with bias after it, an
    Add whose only consumer is another such mean, and a dense head after the nested model's output."""
    inner_in = keras.Input((4, 4, 3))
    y = layers.Conv2D(8, 1, name="expand")(inner_in)
    y = layers.Activation("hard_swish", name="swish_1")(y)
    y = layers.GlobalAveragePooling2D(keepdims=True, name="pool_4x4")(y)
    y = layers.Conv2D(8, 1, name="squeeze")(y)
    p = layers.Activation("hard_swish", name="swish_2")(y)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="pool_1x1")(p)
    s = layers.Conv2D(8, 1, activation="relu", name="se_conv")(s)
    z = layers.Add(name="add")([p, s])
    inner = keras.Model(inner_in, layers.GlobalAveragePooling2D(name="pool_out")(z), name="backbone")
    inputs = keras.Input((4, 4, 3))
    return keras.Model(inputs, layers.Dense(4, name="logits")(inner(inputs)))


def test_squeeze_excite_grids_are_bit_exact_with_litert():
    keras.utils.set_random_seed(2)
    model = _squeeze_excite_net()
    for layer in model.get_layer("backbone").layers + [model.get_layer("logits")]:
        if getattr(layer, "bias", None) is not None:  # trained biases: the int32 bias grid matters
            layer.bias.assign(np.random.default_rng(2).normal(0, 0.5, layer.bias.shape))
    x = np.random.default_rng(2).normal(0, 1, (300, 4, 4, 3)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:100], progress=False)
    backbone = qat.get_layer("backbone")
    # QAT moves a dropped mean's range away from its producer's (EMA of different tensors): the file's conv then
    # reads the producer's grid but holds a bias quantized with the mean's scale
    dropped = backbone.get_layer("quant_pool_1x1").output_quantizer
    dropped.range_max.assign(dropped.range_max * 1.03)
    swish = backbone.get_layer("quant_swish_1")
    assert swish.output_quantizer is None
    assert swish._output_grid() is backbone.get_layer("quant_pool_4x4").output_quantizer
    se_conv = backbone.get_layer("quant_se_conv")
    assert se_conv._bias_source() is dropped
    assert se_conv._input_grid() is backbone.get_layer("quant_swish_2").output_quantizer
    assert qat.get_layer("quant_logits")._input_grid() is not None  # across the nested model's output
    data = te.to_tflite(qat)
    assert "MEAN" in te.read_graph(data).op_names() and "HARD_SWISH" in te.read_graph(data).op_names()
    assert _lsb(qat, data, x).max() == 0


def _every_op_net():
    """conv + BN + ReLU6, depthwise, hard-swish, pointwise, Add, a squeeze-excite (mean, conv + sigmoid, Multiply),
    a separable conv + BN + ReLU (two ops in the file, an int8 tensor between them), an average pooling feeding a
    global one over 6×6 (one chain of shared grids), dense; 24 channels, so that LiteRT's built-in MEAN runs 16 of
    them with SIMD and 8 in scalar code (they round ties differently)."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(24, 3, padding="same", name="c1")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    y = layers.Activation("hard_swish", name="hs")(layers.DepthwiseConv2D(3, padding="same", name="dw")(x))
    a = layers.Add(name="add")([x, layers.Conv2D(24, 1, name="pw")(y)])
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(a)
    s = layers.Conv2D(24, 1, activation="sigmoid", name="se")(s)
    m = layers.Multiply(name="mul")([a, s])
    m = layers.SeparableConv2D(24, 3, padding="same", use_bias=False, name="sep")(m)
    m = layers.ReLU()(layers.BatchNormalization()(m))
    g = layers.GlobalAveragePooling2D(name="gap")(layers.AveragePooling2D(3, 1, name="avg")(m))  # a 6×6 mean
    return keras.Model(inputs, layers.Dense(10, name="fc")(g))


@pytest.fixture(scope="module")
def every_op_export():
    keras.utils.set_random_seed(4)
    model = _every_op_net()
    x = np.random.default_rng(4).normal(0, 1, (200, 8, 8, 3)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:100], progress=False)
    # QAT moves ranges apart: a mean's output range is no longer its input's, so its multiplier is not 1/n
    pool = qat.get_layer("quant_se_pool").output_quantizer
    pool.range_max.assign(pool.range_max * 1.07)
    return qat, te.to_tflite(qat), x


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin", "micro"])
def test_each_kernel_set_is_bit_exact_with_its_runtime(every_op_export, kernels):
    qat, data, x = every_op_export
    assert {"MEAN", "AVERAGE_POOL_2D", "ADD", "MUL", "HARD_SWISH", "LOGISTIC"} <= set(te.read_graph(data).op_names())
    assert te.read_graph(data).op_names().count("DEPTHWISE_CONV_2D") == 2  # dw, and sep's depthwise half
    set_integer_kernels(qat, kernels)
    try:
        if kernels == "micro":
            raw = te.run_micro(data, x)[0]
        else:
            raw = te.TFLiteModel(data, use_xnnpack=kernels == "xnnpack").predict(x, dequantize_outputs=False)
        cmp = te.compare(qat, data, x, tflite_outputs=raw)
        assert cmp.max_lsb_diff == 0, f"{kernels}: {cmp}"
        if kernels == "builtin":
            assert te.compare(qat, data, x, use_xnnpack=False).max_lsb_diff == 0
        # the kernel sets do differ: XNNPACK's arithmetic against the built-in kernels is not exact here
        set_integer_kernels(qat, "xnnpack")
        if kernels != "xnnpack":
            assert te.compare(qat, data, x, tflite_outputs=raw).max_lsb_diff >= 1
    finally:
        set_integer_kernels(qat, "xnnpack")


def test_integer_kernels_are_saved_and_checked(every_op_export, tmp_path):
    qat, data, x = every_op_export
    with pytest.raises(ValueError, match="integer_kernels='arm'"):
        set_integer_kernels(qat, "arm")
    with pytest.raises(ValueError, match="no QuantizeWrapper"):
        set_integer_kernels(_every_op_net(), "micro")
    set_integer_kernels(qat, "micro")
    try:
        expected = qat.predict(x, verbose=0)
        path = tmp_path / "micro.keras"
        qat.save(path)
        loaded = keras.saving.load_model(path)
        assert {l.integer_kernels for l in loaded.layers if isinstance(l, ke.quantization.QuantizeWrapper)} == {"micro"}
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    finally:
        set_integer_kernels(qat, "xnnpack")


def test_a_rewritten_copy_reads_its_own_ranges(conv_export):
    """graph.clone copies wrappers from their configs: their references to other layers' ranges are placed again in
    the new graph, on the copy's own quantizers, not left pointing into the original model."""
    qat, _, x = conv_export
    copy = ke.graph.clone(qat)
    originals = {id(q) for q in ke.quantization.activation_quantizers(qat)}
    wrappers = [l for l in copy.layers if isinstance(l, ke.quantization.QuantizeWrapper)]
    placed = [q for w in wrappers for q in (w._input_range, w._bias_range, w._output_range) if q is not None]
    assert placed and not any(id(q) in originals for q in placed)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert _lsb(copy, te.to_tflite(copy), x).max() == 0


def test_rsqrt_table_is_the_fixed_point_inverse_square_root():
    """The int8 RSQRT kernel's per-code value (2^20/√v from five Newton-Raphson steps in Q3 fixed point) is within
    a few parts per million of the real one, saturates at v ≤ 1, and its requantization gives 127 for a zero input
    (bit-exactness against LiteRT is tested on whole models in tests/test_applications_patterns.py)."""
    from keras_eff.quantization import integer_inference as integer

    table = np.array(integer._RSQRT_DATA[2:], dtype=np.float64)
    exact = 2.0**20 / np.sqrt(np.arange(2, 256))
    assert np.max(np.abs(table - exact) / exact) < 1e-5
    assert integer._RSQRT_DATA[1] == 2**20  # 1/√1 from the saturated multiplier
    x = np.array([0.0, 0.01, 0.04, 0.25], np.float32)
    out = np.asarray(integer.rsqrt(x, 0.01, 0.05, -128))
    np.testing.assert_allclose(out, [(127 + 128) * 0.05, 10.0 * 0.05 * 20, 5.0 * 0.05 * 20, 2.0], rtol=1e-6)
