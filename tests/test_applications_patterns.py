"""The patterns of keras.applications models (issue #17) in tiny models: each must export full int8 (no float island,
int8 I/O) and its simulation must equal LiteRT with XNNPACK: ≥ 99.9 % of outputs bit-exact, at most 1 LSB off."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import quantization_report
from tflite_export.model_file import read_graph


def _qat_int8(model, x, y=None, fit=True):
    """quantize_model → calibrate → one fit step → to_tflite (which refuses any float island)."""
    keras.utils.set_random_seed(0)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x, progress=False)
    if fit:
        n_out = qat.outputs[0].shape[-1]
        y = np.arange(len(x)) % n_out if y is None else y
        qat.compile(
            optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        qat.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    return qat, te.to_tflite(qat)


def _assert_parity(qat, data, x):
    cmp = te.compare(qat, data, x)
    tfl = te.TFLiteModel(data)
    scale, zp = tfl.outputs[0]["quantization"]
    ref = np.asarray(qat.predict(x, verbose=0)).reshape(len(x), -1)
    raw = np.asarray(tfl.predict(x, dequantize_outputs=False)).reshape(len(x), -1).astype(np.int32)
    exact = np.mean(te.runtime.quantize(ref, scale, zp).astype(np.int32) == raw)
    assert exact >= 0.999, f"only {exact:.4%} of outputs bit-exact ({cmp})"
    assert cmp.max_lsb_diff <= 1, str(cmp)
    return cmp


def _op_names(data):
    return read_graph(data).op_names()


def _images(n=64, size=16, lo=0.0, hi=1.0, seed=0):
    return np.random.default_rng(seed).uniform(lo, hi, (n, size, size, 3)).astype(np.float32)


def _head(x, classes=4):
    return layers.Dense(classes)(layers.GlobalAveragePooling2D()(x))


# -- preprocessing inside the model: Rescaling, Normalization (MobileNetV3, EfficientNet, EfficientNetV2) ----------


@pytest.mark.parametrize("scale,offset", [(1 / 127.5, -1.0), (1 / 255.0, 0.0), ([0.01, 0.02, -0.03], [0.5, 0.0, -0.2])])
def test_rescaling_first_layer_is_quantized(scale, offset):
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(scale, offset=offset, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    model = keras.Model(inputs, _head(x))
    x_data = _images(hi=255.0)
    qat, data = _qat_int8(model, x_data)
    assert "rescale" in quantization_report(qat).quantized and not quantization_report(qat).float_layers
    assert "DEPTHWISE_CONV_2D" in _op_names(data)
    _assert_parity(qat, data, x_data)


@pytest.mark.parametrize("invert", [False, True])
def test_rescaling_then_normalization_like_efficientnet(invert):
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.05, 0.051], invert=invert, name="norm")(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = layers.Activation("swish")(layers.BatchNormalization()(x))
    model = keras.Model(inputs, _head(x))
    x_data = _images(hi=255.0)
    qat, data = _qat_int8(model, x_data)
    assert "norm" in quantization_report(qat).quantized and not quantization_report(qat).float_layers
    _assert_parity(qat, data, x_data)


def test_adapted_normalization_default_axis():
    inputs = keras.Input((16, 16, 3))
    norm = layers.Normalization()
    x_data = _images(hi=255.0)
    norm.adapt(x_data)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(norm(inputs))
    qat, data = _qat_int8(keras.Model(inputs, _head(x)), x_data)
    _assert_parity(qat, data, x_data)


# -- standalone BatchNormalization (pre-activation ResNet50V2: ZeroPadding → MaxPool → BN → ReLU) ---------------


def test_maxpool_after_zero_padding_then_standalone_batchnorm():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.ZeroPadding2D(1)(x)
    pooled = layers.MaxPooling2D(3, 2)(x)
    x = layers.ReLU()(layers.BatchNormalization(name="preact_bn")(pooled))
    x = layers.Conv2D(8, 3, padding="same")(x)
    x = layers.Add()([x, pooled])
    x = layers.ReLU()(layers.BatchNormalization(name="post_bn")(x))
    qat, data = _qat_int8(keras.Model(inputs, _head(x)), _images())
    report = quantization_report(qat)
    assert {"preact_bn", "post_bn"} <= set(report.quantized) and not report.float_layers
    _assert_parity(qat, data, _images(seed=1))


def test_standalone_batchnorm_keeps_training_and_saves(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(momentum=0.5, name="bn")(layers.MaxPooling2D()(inputs))
    model = keras.Model(inputs, _head(x))
    qat = ke.quantize_model(model)
    wrapper = qat.get_layer("quant_bn")
    before = np.asarray(wrapper.batchnorm.moving_mean).copy()
    assert {w.name for w in wrapper.trainable_weights} == {"gamma", "beta"}  # the unit kernel stays 1
    x = _images(32, 8, 2.0, 3.0)
    qat.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, np.zeros(32), batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(np.asarray(wrapper.batchnorm.moving_mean), before)  # statistics follow the data
    path = tmp_path / "bn.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_standalone_batchnorm_kernel_is_per_tensor_unless_asked(tmp_path):
    """A standalone BN's 1×1 depthwise kernel has one scale (per-channel scales for it and its bias made DenseNet121's
    file 12.6 % larger than the converter's); weight_granularity="per_channel" keeps one per channel. Both exact."""
    from benchmarks.file_size import file_facts, trained_like_batchnorms

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    stem = layers.Conv2D(64, 3, padding="same", name="stem")(inputs)
    bn = layers.BatchNormalization(name="preact_bn")
    x = layers.Add()([stem, layers.Conv2D(64, 1)(layers.ReLU()(bn(stem)))])
    model = keras.Model(inputs, _head(x))
    assert trained_like_batchnorms(model) == 1  # γ and σ that differ per channel, as after training
    x = _images(64, 8)
    facts = {}
    for granularity in ("auto", "per_channel"):
        keras.utils.set_random_seed(0)
        qat = ke.quantize_model(model, ke.QuantConfig(overrides={"preact_bn": {"weight_granularity": granularity}}))
        assert qat.get_layer("quant_preact_bn").per_channel is (granularity == "per_channel")
        ke.calibrate(qat, x, progress=False)
        data = te.to_tflite(qat)
        _assert_parity(qat, data, _images(64, 8, seed=1))
        facts[granularity] = file_facts(data)
    # the kernel and the bias: 2 × 64 channels × (float32 scale + int64 zero point) against 2 × 1
    assert facts["per_channel"]["quantization_bytes"] - facts["auto"]["quantization_bytes"] == 2 * 63 * 12


# -- Concatenate on one grid (DenseNet121: each block's concat also feeds the next BN; InceptionV3's branches) -------


def test_concatenate_chain_with_other_readers_like_densenet():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(3, 2, padding="same")(layers.ZeroPadding2D(1)(x))  # the block input feeds BN and concat
    for block in range(2):
        for i in range(2):
            y = layers.Conv2D(4, 3, padding="same")(layers.ReLU()(layers.BatchNormalization()(x)))
            x = layers.Concatenate(name=f"block{block}_concat{i}")([x, y])
        if block == 0:  # transition: BN, ReLU, 1×1 conv, average pooling
            x = layers.Conv2D(8, 1)(layers.ReLU()(layers.BatchNormalization()(x)))
            x = layers.AveragePooling2D(2)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    qat, data = _qat_int8(keras.Model(inputs, _head(x)), _images())
    assert not quantization_report(qat).float_layers
    _assert_parity(qat, data, _images(seed=1))


def test_concatenate_branches_with_different_ranges():
    inputs = keras.Input((16, 16, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)  # [0, a] and a wider signed branch
    b = layers.Conv2D(4, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(0, 2.0))(inputs)
    c = layers.MaxPooling2D(3, 1, padding="same")(a)  # also read by the concat, through an inheriting layer
    x = layers.Concatenate()([a, b, c])
    side = layers.Conv2D(4, 1)(a)  # a is read outside the concat too
    x = layers.Concatenate()([layers.Conv2D(4, 1)(x), side])
    qat, data = _qat_int8(keras.Model(inputs, _head(x)), _images())
    _assert_parity(qat, data, _images(seed=1))


def test_average_pool_same_padding_like_inception():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Concatenate()([layers.Conv2D(4, 1, activation="relu")(x), layers.Conv2D(4, 3, padding="same")(x)])
    # the block input feeds 1×1 convs and a 3×3 average pooling (stride 1, 'same'), whose grid is the input's
    branch_pool = layers.Conv2D(4, 1, activation="relu")(layers.AveragePooling2D(3, 1, padding="same")(x))
    branch_1x1 = layers.Conv2D(4, 1, activation="relu")(x)
    branch_max = layers.MaxPooling2D(3, 2, padding="same")(x)
    x = layers.Concatenate()([branch_1x1, branch_pool])
    x = layers.Concatenate()([layers.Conv2D(8, 3, strides=2, padding="same")(x), branch_max])
    qat, data = _qat_int8(keras.Model(inputs, _head(x)), _images())
    assert "AVERAGE_POOL_2D" in _op_names(data)
    _assert_parity(qat, data, _images(seed=1))


# -- grouped convolution with one input channel per group (ConvNeXt's 7×7 convolutions) ----------------------------


@pytest.mark.parametrize("multiplier", [1, 2])
def test_grouped_conv_one_channel_per_group_is_a_depthwise_conv(multiplier):
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    grouped = layers.Conv2D(8 * multiplier, 7, padding="same", groups=8, name="grouped")
    x = grouped(x)
    model = keras.Model(inputs, _head(x))
    x_data = _images()
    qat = ke.quantize_model(model)
    inner = qat.get_layer("quant_grouped").layer
    assert isinstance(inner, layers.DepthwiseConv2D)
    np.testing.assert_allclose(inner(model.layers[1](x_data[:4])), grouped(model.layers[1](x_data[:4])), atol=1e-5)
    qat, data = _qat_int8(model, x_data)
    assert "grouped" in quantization_report(qat).quantized and not quantization_report(qat).float_layers
    _assert_parity(qat, data, _images(seed=1))


# -- grouped convolution with several input channels per group (ResNeXt, RegNet, DONNA's gr_ib cells) -------------


@pytest.mark.parametrize("groups,stride", [(2, 1), (4, 2)])
def test_grouped_conv_is_quantized_bit_exact(groups, stride):
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 1, activation="relu")(inputs)
    x = layers.Conv2D(24, 3, strides=stride, padding="same", groups=groups, use_bias=False, name="grouped")(x)
    x = layers.ReLU()(layers.BatchNormalization(name="grouped_bn")(x))
    model = keras.Model(inputs, _head(x))
    x_data = _images()
    qat, data = _qat_int8(model, x_data)
    report = quantization_report(qat)
    assert "grouped" in report.quantized and not report.float_layers
    graph = read_graph(data)
    filters = [op for op in graph.ops if op.name == "CONV_2D" and graph.tensors[op.inputs[1]].shape[-1] == 16 // groups]
    assert len(filters) == 1  # one int8 CONV_2D whose filter holds c_in / groups input channels: not split
    _assert_parity(qat, data, _images(seed=1))
    ke.quantization.set_integer_kernels(qat, "builtin")  # LiteRT's built-in kernels run it too, as simulated
    tfl = te.TFLiteModel(data, use_xnnpack=False)
    scale, zp = tfl.outputs[0]["quantization"]
    ref = te.runtime.quantize(np.asarray(qat.predict(_images(seed=1), verbose=0)), scale, zp).astype(np.int32)
    raw = np.asarray(tfl.predict(_images(seed=1), dequantize_outputs=False)).astype(np.int32)
    assert np.mean(ref == raw) >= 0.999 and np.abs(ref - raw).max() <= 1


# -- one small keras.applications model end to end: its Rescaling input layer and hard-swish written as Keras ops ------


def test_mobilenet_v3_small_minimalistic_with_preprocessing():
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, minimalistic=True, weights=None, classes=4
    )
    x_data = _images(32, 32, 0.0, 255.0)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x_data, progress=False)
    data = te.to_tflite(qat)
    assert not quantization_report(qat).float_layers
    _assert_parity(qat, data, _images(32, 32, 0.0, 255.0, seed=1))


def test_batchnorm_after_a_conv_with_other_readers_is_quantized():
    """A stem conv read by a shortcut Add and by a pre-activation BatchNorm: the converter cannot fold that BN into
    the conv (the conv's output is needed unnormalized), so it runs as a depthwise conv, on int8 grids."""
    inputs = keras.Input((12, 12, 3))
    stem = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    branch = layers.ReLU()(layers.BatchNormalization(name="pre_bn")(stem))
    branch = layers.Conv2D(8, 3, padding="same", name="branch")(branch)
    model = keras.Model(inputs, _head(layers.Add()([stem, branch])))
    x = _images(n=48, size=12)
    qat, data = _qat_int8(model, x)
    assert "pre_bn" in quantization_report(qat).quantized and not quantization_report(qat).float_layers
    _assert_parity(qat, data, x)


@pytest.mark.parametrize("kind", ["relu", "relu6"])
def test_one_relu_read_by_several_branches_like_nasnet(kind):
    """NASNet's stem (conv + BN) is read by five ReLU layers, one per branch. The converter merges the identical
    ReLUs into one and fuses it into the conv, so the file rounds once, onto the ReLU's grid; a simulation that
    rounds onto the conv's own grid first was up to 2 LSB off on 16 % of the stem's outputs."""
    inputs = keras.Input((12, 12, 3))
    stem = layers.BatchNormalization(name="stem_bn")(layers.Conv2D(8, 3, use_bias=False, name="stem")(inputs))
    relu = (lambda name: layers.ReLU(name=name)) if kind == "relu" else (lambda name: layers.ReLU(6.0, name=name))
    left = layers.Conv2D(8, 1, name="left")(relu("relu_a")(stem))
    right = layers.DepthwiseConv2D(3, padding="same", name="right")(relu("relu_b")(stem))
    pooled = layers.AveragePooling2D(3, strides=1, padding="same", name="pool")(relu("relu_c")(stem))
    model = keras.Model(inputs, _head(layers.Add()([layers.Add()([left, right]), pooled])))
    x = _images(n=48, size=12, lo=-1.0)
    qat, data = _qat_int8(model, x)
    report = quantization_report(qat)
    assert ("stem", kind) in report.fused_activations and not report.float_layers
    # one tensor for the stem's output in the file: the conv with its ReLU fused, read by all three branches
    assert "RELU" not in _op_names(data) and "RELU6" not in _op_names(data)
    _assert_parity(qat, data, x)


@pytest.mark.parametrize("merge", [layers.Add, layers.Multiply])
def test_merge_of_three_tensors_is_one_binary_op_per_step(merge):
    """``Add()([a, b, c])`` is ``(a + b) + c`` in Keras and two ADD ops in the file: the partial sum needs an int8
    range of its own, which quantize_model gives it (before, the file computed both ADDs in float)."""
    inputs = keras.Input((10, 10, 3))
    branches = [layers.Conv2D(6, k, padding="same", name=f"branch{k}")(inputs) for k in (1, 3, 5)]
    merged = merge(name="merge3")(branches)
    model = keras.Model(inputs, _head(merged))
    x = _images(n=48, size=10, lo=-1.0)
    qat, data = _qat_int8(model, x)
    report = quantization_report(qat)
    assert "merge3" in report.quantized and not report.float_layers
    assert _op_names(data).count("ADD" if merge is layers.Add else "MUL") == 2
    _assert_parity(qat, data, x)
    # the user's model is left as it was: its merge still takes three tensors
    assert len(model.get_layer("merge3").input) == 3


@pytest.mark.parametrize("epsilon", [1e-6, 1e-3])  # ConvNeXt's, Keras's default (ε's own grid differs)
def test_layer_normalization_blocks_like_convnext_are_bit_exact(epsilon):
    """ConvNeXt's pattern: LayerNormalization after a stem and a 7×7 depthwise conv, a GELU MLP on the channels, a
    residual Add, and a LayerNormalization on the pooled vector before the head. Each LayerNorm is seven int8 ops in
    the file; the simulation computes them as LiteRT does, its RSQRT in gemmlowp fixed point (a float rsqrt put a
    few positions one LSB off, and every channel of the position with them)."""
    inputs = keras.Input((16, 16, 3))
    x = layers.LayerNormalization(epsilon=epsilon, name="stem_ln")(layers.Conv2D(24, 4, strides=4, name="stem")(inputs))
    for i in range(2):
        h = layers.DepthwiseConv2D(7, padding="same", name=f"dw{i}")(x)
        h = layers.LayerNormalization(epsilon=epsilon, name=f"ln{i}")(h)
        h = layers.Dense(96, activation="gelu", name=f"up{i}")(h)
        x = layers.Add(name=f"res{i}")([x, layers.Dense(24, name=f"down{i}")(h)])
    x = layers.LayerNormalization(epsilon=epsilon, name="head_ln")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Dense(4, name="head")(x))
    x_data = _images(n=64, hi=255.0)
    qat, data = _qat_int8(model, x_data)
    report = quantization_report(qat)
    assert {"stem_ln", "ln0", "ln1", "head_ln"} <= set(report.quantized) and not report.float_layers
    assert _op_names(data).count("RSQRT") == 4
    _assert_parity(qat, data, x_data)


@pytest.mark.parametrize("conv", ["1d", "2d"])
def test_global_average_pooling_beside_other_readers_after_training(conv):
    """A conv read by a global average pooling and by a Flatten head keeps its own grid; the pooling's MEAN reads
    it there. The pooling used to quantize its input again on its own range, which one training step moved apart
    from the conv's, and the file then held a DEQUANTIZE (a float island)."""
    inputs = keras.Input((12, 4) if conv == "1d" else (6, 6, 4))
    p = (layers.Conv1D if conv == "1d" else layers.Conv2D)(4, 1, name="conv")(inputs)
    pooled = (layers.GlobalAveragePooling1D if conv == "1d" else layers.GlobalAveragePooling2D)(name="gap")(p)
    model = keras.Model(inputs, layers.Add()([layers.Dense(3)(pooled), layers.Dense(3)(layers.Flatten()(p))]))
    x = np.random.default_rng(0).uniform(-1, 1, (48,) + tuple(inputs.shape[1:])).astype(np.float32)
    qat, data = _qat_int8(model, x)  # one fit step, then the strict export
    _assert_parity(qat, data, x)


# -- activations TFLite runs as one fused clamp or one op with a fixed grid -------------------------------------------


def _activation_after_dense(activation, as_argument):
    inputs = keras.Input((32,))
    if as_argument:
        h = layers.Dense(48, activation=activation)(inputs)
    else:
        h = layers.Activation(activation, name="act")(layers.Dense(48)(inputs))
    return keras.Model(inputs, layers.Dense(10)(h))


@pytest.mark.parametrize("as_argument", [False, True])
def test_hard_tanh_is_fused_into_the_op_before_it(as_argument):
    """The converter fuses a clip to [-1, 1] into the Dense (RELU_N1_TO_1): one rounding. Simulated as a separate
    layer, it rounded twice (on the Dense's grid, then on its own): 3 LSB off on 2 % of outputs."""
    x = np.random.default_rng(0).normal(0, 3, (2000, 32)).astype(np.float32)
    qat, data = _qat_int8(_activation_after_dense("hard_tanh", as_argument), x[:256])
    assert _op_names(data) == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    if not as_argument:
        assert [act for _, act in quantization_report(qat).fused_activations] == ["hard_tanh"]
    cmp = te.compare(qat, data, x)
    assert cmp.max_lsb_diff <= 1 and cmp.within_1_lsb == 1.0, str(cmp)


@pytest.mark.parametrize("as_argument", [False, True])
def test_log_softmax_takes_tflites_fixed_grid(as_argument):
    """int8 LOG_SOFTMAX writes scale 16/256, zero point 127; a learned range made the converter requantize after it
    (a QUANTIZE op), 14 LSB off."""
    x = np.random.default_rng(0).normal(0, 3, (2000, 32)).astype(np.float32)
    qat, data = _qat_int8(_activation_after_dense("log_softmax", as_argument), x[:256])
    assert "QUANTIZE" not in _op_names(data) and "LOG_SOFTMAX" in _op_names(data)
    for kernels in ("xnnpack", "builtin"):
        cmp = te.compare(qat, data, x, kernels=kernels)
        assert cmp.max_lsb_diff <= 1, (kernels, str(cmp))


@pytest.mark.parametrize("form", ["layer", "argument", "gate"])
def test_hard_sigmoid_is_add_relu6_then_mul(form, tmp_path):
    """TFLite has no hard-sigmoid op: the converter writes ADD and MUL, which were float islands (FloatIslandError).
    quantize_model runs it as ReLU6(x + 3) × 1/6 with a range on each (MobileNetV3's hand-written form)."""
    inputs = keras.Input((32,))
    h = layers.Dense(48)(inputs)
    if form == "layer":
        h = layers.Activation("hard_sigmoid")(h)
    elif form == "argument":
        h = layers.Dense(48, activation="hard_sigmoid")(inputs)
    else:  # a squeeze-excite-like gate
        h = layers.Multiply()([h, layers.Activation("hard_sigmoid")(layers.Dense(48)(h))])
    x = np.random.default_rng(0).normal(0, 3, (1000, 32)).astype(np.float32)
    qat, data = _qat_int8(keras.Model(inputs, layers.Dense(10)(h)), x[:256])
    ops = _op_names(data)
    assert ops.count("ADD") == 1 and ops.count("MUL") == 1 + (form == "gate"), ops
    _assert_parity(qat, data, x)
    path = tmp_path / "hard_sigmoid.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), qat.predict(x, verbose=0))


OP_ACTIVATIONS = {
    "relu6": lambda h: ops.relu6(h),
    "clip_0_6": lambda h: ops.clip(h, 0.0, 6.0),
    "maximum_0": lambda h: ops.maximum(h, 0.0),
    "clip_-1_1": lambda h: ops.clip(h, -1.0, 1.0),
    "hard_tanh": lambda h: ops.hard_tanh(h),
    "log_softmax": lambda h: ops.log_softmax(h),
    "hard_sigmoid": lambda h: ops.hard_sigmoid(h),
    "silu": lambda h: ops.silu(h),
}


@pytest.mark.parametrize("form", sorted(OP_ACTIVATIONS))
def test_activations_written_as_keras_ops(form):
    """Keras ops in a functional graph compute as the layers do: a ReLU, ReLU6 or clip to [-1, 1] after a Dense is
    fused into it (one rounding; the op node with a range of its own rounded twice, 2–3 LSB off), log_softmax takes
    LOG_SOFTMAX's fixed grid (8 LSB off), hard_sigmoid is ReLU6(x + 3) × 1/6 (a float island before), silu is
    quantized as the layer, its sigmoid on LOGISTIC's fixed grid (16 % of outputs 1–2 LSB off before)."""
    inputs = keras.Input((32,))
    model = keras.Model(inputs, layers.Dense(10)(OP_ACTIVATIONS[form](layers.Dense(48)(inputs))))
    x = np.random.default_rng(0).normal(0, 3, (2000, 32)).astype(np.float32)
    qat, data = _qat_int8(model, x[:256])
    _assert_parity(qat, data, x)


# activations the converter splits into several ops: softplus into EXP, ADD, LOG (float islands before)
CHAINED = [
    "tanh_shrink", "softsign", "sparse_sigmoid", "elu", "celu", "selu", "softplus", "mish", "squareplus",
    "log_sigmoid", "soft_shrink", "sparse_plus", "hard_shrink",  # the converter's own PTQ leaves these in float
]  # fmt: skip


@pytest.mark.parametrize("activation", CHAINED)
def test_activations_the_converter_splits_are_chains_of_int8_ops(activation):
    """The converter writes these as several ops (EXP, LOG, ABS, DIV, MINIMUM ...) and, with no range on their inner
    tensors, left them in float (FloatIslandError); tanh_shrink's TANH grid was not simulated (2 LSB off).
    quantize_model writes each as a chain of int8 ops with a range after every step: full int8, bit-exact (squareplus
    too, whose int8 SQRT truncates: simulated with rounding, 2 LSB off)."""
    x = np.random.default_rng(0).normal(0, 3, (1000, 32)).astype(np.float32)
    qat, data = _qat_int8(_activation_after_dense(activation, as_argument=False), x[:256])
    assert "act" in quantization_report(qat).quantized
    assert len(_op_names(data)) > 3, _op_names(data)  # the chain, between the two FULLY_CONNECTED
    _assert_parity(qat, data, x)
    ke.quantization.set_integer_kernels(qat, "builtin")  # LiteRT's built-in kernels
    assert te.compare(qat, data, x, kernels="builtin").max_lsb_diff <= 1
    if not {"EXP", "LOG", "SQRT"} & set(_op_names(data)):  # TFLite Micro has no int8 EXP, LOG or SQRT
        ke.quantization.set_integer_kernels(qat, "micro")
        scale, zp = te.TFLiteModel(data).outputs[0]["quantization"]
        micro = np.asarray(te.run_micro(data, x[:100])[0])
        np.testing.assert_array_equal(te.runtime.quantize(qat.predict(x[:100], verbose=0), scale, zp), micro)


CHAIN_FORMS = {
    "mish_argument": lambda h: layers.Dense(48, activation="mish")(h),
    "celu_op_alpha": lambda h: ops.celu(layers.Dense(48)(h), alpha=0.5),
    "elu_layer_alpha": lambda h: layers.ELU(alpha=0.7)(layers.Dense(48)(h)),
    "softplus_op": lambda h: ops.softplus(layers.Dense(48)(h)),
    "soft_shrink_op_threshold": lambda h: ops.soft_shrink(layers.Dense(48)(h), threshold=1.5),
    "hard_shrink_op_threshold": lambda h: ops.hard_shrink(layers.Dense(48)(h), threshold=2.0),
}


@pytest.mark.parametrize("form", sorted(CHAIN_FORMS))
def test_split_activations_in_every_form_users_write(form, tmp_path):
    """A conv/dense layer's ``activation=``, a Keras op (with its parameters), the ELU layer: the same chains, and a
    ``.keras`` round trip keeps them."""
    inputs = keras.Input((32,))
    x = np.random.default_rng(1).normal(0, 3, (1000, 32)).astype(np.float32)
    qat, data = _qat_int8(keras.Model(inputs, layers.Dense(10)(CHAIN_FORMS[form](inputs))), x[:256])
    assert len(_op_names(data)) > 4, _op_names(data)  # the chain between the two FULLY_CONNECTED
    _assert_parity(qat, data, x)
    path = tmp_path / "chain.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), qat.predict(x, verbose=0))


@pytest.mark.parametrize("activation", ["softplus", "mish", "selu"])
def test_exponential_chains_keep_the_float_models_decisions(activation):
    """The converter's own form, log(1 + exp(x)), puts exp(x) on one int8 grid up to e^max: every negative input's
    exponential rounds to 0 or one step (its own PTQ agreed with the float model on 36–61 % of argmaxes). The chains
    only take the exponential of min(x, 0) or −|x|: the int8 file keeps the float model's decisions."""
    keras.utils.set_random_seed(0)
    model = _activation_after_dense(activation, as_argument=False)
    x = np.random.default_rng(0).normal(0, 3, (2000, 32)).astype(np.float32)
    qat, data = _qat_int8(model, x[:256], fit=False)
    int8 = np.asarray(te.TFLiteModel(data).predict(x)).argmax(-1)
    assert np.mean(int8 == model.predict(x, verbose=0).argmax(-1)) >= 0.95


def test_symmetric_activation_ranges_take_the_converters_zero_point():
    """A range symmetric about 0 puts the zero point on a tie (−min/scale = 127.5): the converter rounds it up in
    double (zero point 0), TensorFlow's fake-quant op down in float32 (−1), so the simulation's grid was one step off
    the file's at both ends (96.6 % bit-exact, max 2 LSB); the quantizer now hands the op the converter's grid."""
    inputs = keras.Input((12, 12, 3))
    h = layers.Conv2D(8, 3, activation="relu")(inputs)
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3)(h))
    model = keras.Model(inputs, layers.Dense(10)(h))
    x = np.random.default_rng(0).normal(0, 1, (500, 12, 12, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    qat = ke.quantize_model(model, activation_symmetric=True)
    ke.calibrate(qat, x[:256], progress=False)
    data = te.to_tflite(qat)
    zero_points = {round(float(q.tflite_zero_point())) for q in ke.quantization.activation_quantizers(qat)}
    assert zero_points == {0}
    cmp = _assert_parity(qat, data, x)
    assert cmp.max_lsb_diff == 0, str(cmp)


ONE_GRID = {  # TFLite gives input and output one scale: slicing, reductions, concatenation, resizing, pooling
    "slice": lambda h: h[:, 2:10, 2:10, :],
    "reduce_max": lambda h: ops.max(h, axis=[1, 2]),
    "ops.concatenate": lambda h: ops.concatenate([h, layers.Conv2D(4, 3, padding="same")(h)], axis=-1),
    "ops.stack": lambda h: ops.stack([h, layers.Conv2D(8, 3, padding="same")(h)], axis=1),
    "upsampling_bilinear": lambda h: layers.UpSampling2D(interpolation="bilinear")(h),
    "resizing": lambda h: layers.Resizing(8, 7)(h),
    "ops.image.resize": lambda h: ops.image.resize(h, (6, 6)),
    "ops.max_pool": lambda h: ops.max_pool(h, 2, 2),
    "ops.average_pool": lambda h: ops.average_pool(h, 2, 2),
    # a constant operand lies on the int8 grid the converter gives it (per tensor, widened to hold 0)
    "add_channel_constant": lambda h: h + np.linspace(-1.0, 1.0, 8).astype(np.float32),
    "multiply_channel_constant": lambda h: h * np.linspace(0.5, 1.5, 8).astype(np.float32),
}


@pytest.mark.parametrize("form", sorted(ONE_GRID))
def test_ops_on_their_inputs_grid(form, tmp_path):
    """Keras ops and layers whose int8 kernel keeps its input's grid: a slice, reduction or max pooling given a range
    of its own, or a concatenation or average pooling written as a Keras op, made the file requantize (1–4 LSB off);
    a bilinear resize (Resizing, which quantize_model kept float, UpSampling2D, ``ops.image.resize``) interpolates
    onto that grid as XNNPACK's Q11 kernel does (3–7 LSB off before). And a constant vector added or multiplied lies
    on its own int8 grid (1–2 LSB off while the simulation used the float constant)."""
    inputs = keras.Input((12, 12, 3))
    h = ONE_GRID[form](layers.Conv2D(8, 3, padding="same")(inputs))
    model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h) if len(h.shape) > 2 else h))
    x = np.random.default_rng(0).normal(0, 1, (400, 12, 12, 3)).astype(np.float32)
    qat, data = _qat_int8(model, x[:256])
    assert "QUANTIZE" not in _op_names(data)
    assert not quantization_report(qat).float_layers
    cmp = _assert_parity(qat, data, x)
    assert cmp.max_lsb_diff == 0, str(cmp)
    path = tmp_path / f"{form}.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), qat.predict(x, verbose=0))


@pytest.mark.parametrize("resize", ["up2", "12to20x17", "12to6"])
def test_bilinear_resize_on_the_builtin_kernels_and_tflite_micro(resize):
    """LiteRT's built-in int8 RESIZE_BILINEAR and TFLite Micro's run TFLite's reference integer kernel (Q10 weights,
    the Q20 sum rounded half away from zero), not XNNPACK's Q11 one: with the integer kernels set to "builtin" or
    "micro" the simulation computes that kernel (up to 3 LSB off it before, with the float interpolation)."""
    size = {"up2": None, "12to20x17": (20, 17), "12to6": (6, 6)}[resize]
    inputs = keras.Input((12, 12, 3))
    h = layers.Conv2D(4, 3, padding="same")(inputs)
    h = layers.UpSampling2D(interpolation="bilinear")(h) if size is None else layers.Resizing(*size)(h)
    model = keras.Model(inputs, layers.Conv2D(3, 1)(h))
    x = np.random.default_rng(0).normal(0, 1, (64, 12, 12, 3)).astype(np.float32)
    qat, data = _qat_int8(model, x[:32], fit=False)
    scale, zp = te.TFLiteModel(data).outputs[0]["quantization"]
    ke.quantization.set_integer_kernels(qat, "builtin")
    raw = np.asarray(te.TFLiteModel(data, kernels="builtin").predict(x, dequantize_outputs=False))
    np.testing.assert_array_equal(te.runtime.quantize(qat.predict(x, verbose=0), scale, zp), raw)
    ke.quantization.set_integer_kernels(qat, "micro")
    micro = np.asarray(te.run_micro(data, x[:8])[0])  # (one array per output)
    np.testing.assert_array_equal(te.runtime.quantize(qat.predict(x[:8], verbose=0), scale, zp), micro)


@keras.saving.register_keras_serializable(package="tests")
class MishBlock(keras.Model):
    """A subclassed model: the decorator wraps the dense layers, QuantizedActivation runs mish between them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = ke.quantize(layers.Dense(48), quantize_inputs=True)
        self.act = ke.quantization.QuantizedActivation("mish")
        self.head = ke.quantize(layers.Dense(10))

    def call(self, x):
        return self.head(self.act(self.hidden(x)))


def test_quantized_activation_in_a_subclassed_model(tmp_path):
    """Where quantize_model cannot rewrite the graph (a subclassed model), the chain is a layer of its own: full int8,
    within 1 LSB, and a .keras round trip keeps its ranges."""
    x = np.random.default_rng(0).normal(0, 3, (600, 32)).astype(np.float32)
    model = MishBlock()
    model(x[:2])
    ke.calibrate(model, x[:256], progress=False)
    data = te.to_tflite(model)
    assert {"ABS", "LOGISTIC", "LOG", "TANH"} <= set(_op_names(data)), _op_names(data)  # softplus's chain, then tanh
    assert te.compare(model, data, x).max_lsb_diff <= 1
    model.save(tmp_path / "block.keras")
    loaded = keras.saving.load_model(tmp_path / "block.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_the_decorator_warns_of_an_activation_it_cannot_chain():
    with pytest.warns(UserWarning, match=r"QuantizedActivation\('mish'\)"):
        ke.quantize(layers.Dense(8, activation="mish"))
    with pytest.warns(UserWarning, match="'elu'"):
        ke.quantize(layers.ELU())
    with pytest.raises(ValueError, match="has no chain of int8 ops; the chains: celu, elu"):
        ke.quantization.QuantizedActivation("gelu")
    with pytest.raises(ValueError, match="alpha applies to 'elu' and 'celu'"):
        ke.quantization.QuantizedActivation("softplus", alpha=0.5)


LEAKY_FORMS = {
    "layer": lambda h: layers.LeakyReLU(0.3)(h),
    "relu_with_slope": lambda h: layers.ReLU(negative_slope=0.05)(h),
    "argument": None,  # Dense(48, activation="leaky_relu")
    "op": lambda h: ops.leaky_relu(h, negative_slope=0.1),
}


@pytest.mark.parametrize("form", sorted(LEAKY_FORMS))
def test_leaky_relu_computes_as_each_kernel_set(form):
    """XNNPACK's int8 LEAKY_RELU requantizes with Q8 multipliers (lrintf(256 · s_in/s_out), times the slope below
    zero): simulated with float requantization, 17 % of outputs were off, by up to 2 LSB after the next Dense. The
    built-in kernels and TFLite Micro use gemmlowp multipliers. Each set is now computed as it is: bit-exact."""
    inputs = keras.Input((32,))
    if form == "argument":
        h = layers.Dense(48, activation="leaky_relu")(inputs)
    else:
        h = LEAKY_FORMS[form](layers.Dense(48)(inputs))
    x = np.random.default_rng(0).normal(0, 3, (2000, 32)).astype(np.float32)
    qat, data = _qat_int8(keras.Model(inputs, layers.Dense(10)(h)), x[:256])
    assert "LEAKY_RELU" in _op_names(data), _op_names(data)
    cmp = _assert_parity(qat, data, x)
    assert cmp.max_lsb_diff == 0, str(cmp)
    ke.quantization.set_integer_kernels(qat, "builtin")
    assert te.compare(qat, data, x, kernels="builtin").max_lsb_diff == 0
    ke.quantization.set_integer_kernels(qat, "micro")
    scale, zp = te.TFLiteModel(data).outputs[0]["quantization"]
    micro = np.asarray(te.run_micro(data, x[:100])[0])
    np.testing.assert_array_equal(te.runtime.quantize(qat.predict(x[:100], verbose=0), scale, zp), micro)
