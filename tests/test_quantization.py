import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.errors import UnsupportedModelError
from keras_eff.quantization import ActivationQuantizer, QuantizeWrapper, WeightQuantizer, fake_quant
from keras_eff.quantization.quantizers import MIN_WIDTH

finite = st.floats(-50, 50, allow_nan=False, width=32)


# -- quantizer math ---------------------------------------------------------------------------------------------


def _nudged_range(lo, hi, bits):
    """TensorFlow's documented nudge: the range shifts so that zero falls exactly on the grid. In float32, as the
    kernel computes it (in float64 a zero point of 3.4999998 became 3.5 and rounded the other way)."""
    lo, hi, levels = np.float32(lo), np.float32(hi), np.float32(2**bits - 1)
    scale = (hi - lo) / levels
    zero_point = min(max(np.floor(np.float32(-lo / scale) + np.float32(0.5)), 0), levels)  # half away, as TensorFlow
    return float(-zero_point * scale), float((levels - zero_point) * scale), float(scale)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 64), elements=finite),
    lo=st.floats(-10, -0.01),
    hi=st.floats(0.01, 10),
    bits=st.integers(2, 8),
)
@example(x=np.array([-11.0], np.float32), lo=-10.0, hi=2.0, bits=2)  # zero point 2.5 rounds to 3: range [-12, 0]
@example(x=np.array([2.0], np.float32), lo=-1.00001, hi=1.00001, bits=3)  # zero point 3.4999998 in float32
def test_activation_fake_quant_grid_clip_idempotent(x, lo, hi, bits):
    q = fake_quant(x, lo, hi, bits).numpy()
    nlo, nhi, scale = _nudged_range(lo, hi, bits)
    steps = q / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=2e-3)  # on the grid
    assert q.min() >= nlo - 1e-4 and q.max() <= nhi + 1e-4  # clipped to the range
    assert np.all(np.abs(q - np.clip(x, nlo, nhi)) <= scale / 2 + 1e-4)  # the nearest grid value
    np.testing.assert_allclose(fake_quant(q, lo, hi, bits).numpy(), q, atol=1e-5)  # idempotent


@settings(max_examples=30, deadline=None)
@given(w=arrays(np.float32, (3, 3, 2, 4), elements=finite), bits=st.integers(2, 8))
def test_symmetric_weight_quantizer_per_channel(w, bits):
    wq = WeightQuantizer(bits=bits, per_channel=True)
    q = wq(w).numpy()
    scale = wq.scale(w).numpy()  # one per output channel
    levels = 2 ** (bits - 1) - 1
    ints = q / np.maximum(scale, 1e-12)
    np.testing.assert_allclose(ints, np.round(ints), atol=2e-3)
    assert np.all(np.abs(np.round(ints)) <= levels)  # the narrow b-bit range
    np.testing.assert_allclose(wq(q).numpy(), q, atol=1e-5)  # idempotent
    assert np.all(np.abs(q - w) <= scale / 2 + 1e-5)  # the nearest grid value, per channel


def test_straight_through_gradient_inside_range_zero_outside():
    x = tf.constant([-3.0, -0.5, 0.0, 0.7, 2.5])
    lo, hi = tf.Variable(-1.0), tf.Variable(1.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = fake_quant(x, lo, hi)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])
    # gradients for learned ranges come from the clipped values
    assert tape.gradient(y, lo).numpy() == pytest.approx(1.0)
    assert tape.gradient(y, hi).numpy() == pytest.approx(1.0)


@pytest.mark.parametrize("bits", [1, 17, 0, 8.0, True])
def test_bits_out_of_range_are_refused(bits):
    with pytest.raises(ValueError, match="from 2 to 16"):
        WeightQuantizer(bits=bits)
    with pytest.raises(ValueError, match="activation_bits"):
        ke.QuantConfig(activation_bits=bits)


def test_activation_range_ema_and_freeze():
    q = ActivationQuantizer(ema_decay=0.5)
    q.build()
    q(np.array([-1.0, 3.0], np.float32), training=True)  # the first batch sets the range
    assert (q.range_min.numpy(), q.range_max.numpy()) == (-1.0, 3.0)
    q(np.array([-3.0, 5.0], np.float32), training=True)
    assert (q.range_min.numpy(), q.range_max.numpy()) == (-2.0, 4.0)
    q(np.array([-9.0, 9.0], np.float32), training=False)  # inference leaves it alone
    assert q.range_max.numpy() == 4.0
    q.ranges_frozen.assign(1.0)
    q(np.array([-9.0, 9.0], np.float32), training=True)
    assert q.range_max.numpy() == 4.0


# -- wrapped layers ---------------------------------------------------------------------------------------------

LAYERS = {
    "conv1d": (lambda: layers.Conv1D(4, 3, padding="same"), (12, 3)),
    "conv2d": (lambda: layers.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 3)),
    "depthwise": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3)),
    "separable": (lambda: layers.SeparableConv2D(5, 3, padding="same"), (8, 8, 3)),
    "dense": (lambda: layers.Dense(6), (7,)),
    "conv_transpose": (lambda: layers.Conv2DTranspose(3, 3, strides=2, padding="same"), (5, 5, 4)),
}


def _single_layer_model(key):
    build, shape = LAYERS[key]
    inputs = keras.Input(shape)
    layer = build()
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model, shape


@pytest.mark.parametrize("key", sorted(LAYERS))
def test_each_layer_type_quantizes_and_exports(key, tmp_path):
    model, shape = _single_layer_model(key)
    x = np.random.default_rng(2).uniform(-1, 1, (64,) + shape).astype(np.float32)
    q = ke.quantize_model(model)
    wrapper = next(l for l in q.layers if isinstance(l, QuantizeWrapper))
    assert wrapper.per_channel == (key not in ("dense", "conv_transpose"))
    ke.calibrate(q, x, progress=False)
    # the wrapper computes the layer with quantized kernels: close to float, and its kernels on the grid
    kernels, _ = wrapper.quantized_kernels()
    for k in kernels.values():
        k = k.numpy()
        assert len(np.unique(k)) <= 255 * (k.shape[-1] if wrapper.per_channel else 1)
    y, yq = model(x).numpy(), q(x).numpy()
    assert np.max(np.abs(y - yq)) < 0.1 * np.max(np.abs(y))
    data = te.to_tflite(q)  # no representative data: the ranges come from the model
    cmp = te.compare(q, data, x)
    assert cmp.within_1_lsb >= 0.99 and cmp.max_lsb_diff <= 2
    # .keras round trip with no custom_objects
    path = tmp_path / f"{key}.keras"
    q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), yq)


def _conv_bn_wrapper(conv, bn, x):
    """A 16-bit QuantizeWrapper of copies of ``conv`` with ``bn`` folded in, built on ``x``, with their weights."""
    wrapper = QuantizeWrapper(
        layers.Conv2D.from_config(conv.get_config()),
        batchnorm=layers.BatchNormalization.from_config(bn.get_config()),
        weight_bits=16,
        quantize_output=False,
    )
    wrapper(x)
    wrapper.layer.set_weights(conv.get_weights())
    wrapper.batchnorm.set_weights(bn.get_weights())
    return wrapper


def test_batchnorm_folding_equals_unfolded(rng):
    inputs = keras.Input((6, 6, 3))
    conv = layers.Conv2D(4, 3, use_bias=True)
    bn = layers.BatchNormalization()
    model = keras.Model(inputs, bn(conv(inputs)))
    conv.set_weights([rng.normal(0, 1, (3, 3, 3, 4)), rng.normal(0, 1, 4)])
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    x = rng.normal(0, 1, (8, 6, 6, 3)).astype(np.float32)
    wrapper = _conv_bn_wrapper(conv, bn, x)
    # inference: conv(x, w·γ/σ) + folded bias == BN(conv(x))
    kernels, bias = wrapper.folded_kernels()
    folded = keras.ops.conv(x, kernels["kernel"]) + bias
    np.testing.assert_allclose(folded, model(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wrapper(x, training=False), model(x), rtol=1e-3, atol=1e-3)
    # training with live statistics: the σ-corrected fold equals BN in training mode (batch statistics), and the
    # moving statistics take the same step as the float BN's
    initial_mean = bn.moving_mean.numpy().copy()
    expected = bn(conv(x), training=True)
    np.testing.assert_allclose(wrapper(x, training=True), expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(wrapper.batchnorm.moving_mean.numpy(), initial_mean)
    np.testing.assert_allclose(wrapper.batchnorm.moving_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    # frozen: moving statistics stay, output follows the inference fold
    wrapper.bn_frozen.assign(1.0)
    before = wrapper.batchnorm.moving_mean.numpy().copy()
    np.testing.assert_allclose(wrapper(x, training=True), wrapper(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(wrapper.batchnorm.moving_mean.numpy(), before)


def test_unfolded_batchnorm_is_quantized_on_its_own_and_exports(rng):
    """fold_batchnorm=False: the BN keeps its own layer and output range (Keras passes it a mask=None keyword)."""
    inputs = keras.Input((6, 6, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, layers.Dense(3)(layers.Flatten()(layers.ReLU()(x))))
    qat = ke.quantize_model(model, ke.QuantConfig(fold_batchnorm=False))
    kinds = [type(getattr(layer, "layer", layer)).__name__ for layer in qat.layers]
    assert "BatchNormalization" in kinds
    assert not any(getattr(layer, "batchnorm", None) is not None for layer in qat.layers)
    data = rng.uniform(-1, 1, (300, 6, 6, 3)).astype(np.float32)
    ke.calibrate(qat, data[:200], progress=False)
    cmp = te.compare(qat, te.to_tflite(qat), data)
    assert cmp.within_1_lsb >= 0.99 and cmp.max_lsb_diff <= 2, cmp


def test_live_batchnorm_gradients_equal_float_batchnorm_training(rng):
    """With live statistics the gradient flows through the batch mean and variance, as in BatchNormalization's own
    training (held constant, QAT of a small CNN lost 3.6 points against TF-MOT: benchmarks/tfmot.py)."""
    import tensorflow as tf

    conv = layers.Conv2D(4, 3, use_bias=False)
    bn = layers.BatchNormalization()
    x = tf.constant(rng.normal(0, 1, (8, 6, 6, 3)).astype(np.float32))
    conv(x), bn(conv(x))
    conv.set_weights([rng.normal(0, 1, (3, 3, 3, 4))])
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    wrapper = _conv_bn_wrapper(conv, bn, x)
    r = tf.constant(rng.normal(0, 1, (8, 4, 4, 4)).astype(np.float32))  # a loss whose gradient BN does not cancel
    grads = []
    for fn in (lambda t: bn(conv(t), training=True), lambda t: wrapper(t, training=True)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * r)
        grads.append(tape.gradient(loss, x).numpy())
    scale = np.abs(grads[0]).max()
    np.testing.assert_allclose(grads[1], grads[0], rtol=0, atol=2e-3 * scale)


def _exported_quant_params(data):
    graph = te.read_graph(data)
    return graph, {op.name: op for op in graph.ops}


def test_fixed_and_shared_ranges_appear_in_the_file(rng):
    # bit-exact on every one of 25 random initializations since MEAN rounds with its zero point (before that, 7 of
    # 25 put softmax outputs 2 LSB off, through the dense layer after the mean)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    a = layers.Conv2D(4, 1, activation="relu", name="a")(inputs)
    b = layers.Conv2D(4, 3, padding="same", name="b")(inputs)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, x)
    q = ke.quantize_model(model)
    ke.calibrate(q, rng.normal(0, 1, (64, 8, 8, 1)).astype(np.float32), progress=False)
    data = te.to_tflite(q)
    graph = te.read_graph(data)
    t = graph.tensors
    softmax = next(op for op in graph.ops if op.name == "SOFTMAX")
    out = t[softmax.outputs[0]]
    assert out.scales[0] == pytest.approx(1 / 256) and out.zero_points[0] == -128
    concat = next(op for op in graph.ops if op.name == "CONCATENATION")
    grids = {(float(t[i].scales[0]), int(t[i].zero_points[0])) for i in concat.inputs + concat.outputs}
    assert len(grids) == 1, f"concatenation inputs and output on different grids: {grids}"
    mean = next(op for op in graph.ops if op.name == "MEAN")
    assert (float(t[mean.outputs[0]].scales[0]), int(t[mean.outputs[0]].zero_points[0])) in grids
    assert "QUANTIZE" not in graph.op_names()
    cmp = te.compare(q, data, rng.normal(0, 1, (200, 8, 8, 1)).astype(np.float32))
    assert cmp.max_lsb_diff == 0, cmp


def test_sub_8_bit_weights_are_stored_in_the_narrow_range(rng):
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, layers.Conv2D(3, 3, name="conv")(inputs))
    q = ke.quantize_model(model, ke.QuantConfig(weight_bits=4))
    ke.calibrate(q, rng.normal(0, 1, (32, 6, 6, 2)).astype(np.float32), progress=False)
    data = te.to_tflite(q)
    interpreter = te.make_interpreter(data, use_xnnpack=False)
    graph = te.read_graph(data)
    conv = next(op for op in graph.ops if op.name == "CONV_2D")
    weights = interpreter.get_tensor(conv.inputs[1])
    assert weights.dtype == np.int8 and np.abs(weights).max() <= 7
    assert len(np.unique(weights)) <= 15


def test_quantized_model_leaves_the_original_untouched(rng):
    from keras_eff.models import small_cnn

    model = small_cnn(width=4)
    before = [w.copy() for w in model.get_weights()]
    q = ke.quantize_model(model)
    q.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16), epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not {id(v) for v in model.weights} & {id(v) for v in q.weights}
    assert len(ke.quantization.quantization_report(q).folded_batchnorm) == 3


def test_freeze_callbacks_stop_updates(rng):
    from keras_eff.models import small_cnn

    q = ke.quantize_model(small_cnn(width=4))
    x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)
    ke.calibrate(q, x, progress=False)
    q.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = next(l for l in q.layers if isinstance(l, QuantizeWrapper) and l.batchnorm is not None)
    ranges = ke.quantization.activation_quantizers(q)
    stats = wrapper.batchnorm.moving_mean.numpy().copy()
    q.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[ke.callbacks.FreezeBatchNorm(step=0), ke.callbacks.FreezeRanges(epoch=0)],
    )
    np.testing.assert_array_equal(wrapper.batchnorm.moving_mean.numpy(), stats)
    before = [(r.range_min.numpy(), r.range_max.numpy()) for r in ranges]
    q.fit(x * 3, y, batch_size=16, epochs=1, verbose=0)  # still frozen: the flags are part of the model's state
    assert before == [(r.range_min.numpy(), r.range_max.numpy()) for r in ranges]
    with pytest.raises(ValueError, match="exactly one of epoch= or step="):
        ke.callbacks.FreezeRanges()
    cb = ke.callbacks.FreezeBatchNorm(epoch=2)
    assert type(cb).from_config(cb.get_config()).epoch == 2


def test_live_ranges_and_statistics_move_without_freezing(rng):
    from keras_eff.models import small_cnn

    q = ke.quantize_model(small_cnn(width=4))
    x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)
    ke.calibrate(q, x, progress=False)
    q.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = next(l for l in q.layers if isinstance(l, QuantizeWrapper) and l.batchnorm is not None)
    stats = wrapper.batchnorm.moving_mean.numpy().copy()
    first = ke.quantization.activation_quantizers(q)[0]
    hi = first.range_max.numpy()
    q.fit(x * 3, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(wrapper.batchnorm.moving_mean.numpy(), stats)
    assert first.range_max.numpy() > hi


def test_freezing_batchnorm_mid_fit_retraces_onto_the_frozen_branch(rng):
    """The live/frozen BatchNorm branch is chosen when the training step is traced (no tf.cond holding both and their
    gradients): FreezeBatchNorm(step=2) lets two steps update the statistics, then the retraced step leaves them."""
    from keras_eff.models import small_cnn

    q = ke.quantize_model(small_cnn(width=4))
    x, y = rng.random((64, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 64)
    ke.calibrate(q, x, progress=False)
    q.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = next(l for l in q.layers if isinstance(l, QuantizeWrapper) and l.batchnorm is not None)
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(wrapper.batchnorm.moving_mean.numpy().copy())

    start = wrapper.batchnorm.moving_mean.numpy().copy()
    q.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ke.callbacks.FreezeBatchNorm(step=2), Watch()])
    assert len(seen) == 4
    assert not np.array_equal(seen[0], start) and not np.array_equal(seen[1], seen[0])  # live for two steps
    np.testing.assert_array_equal(seen[2], seen[1])  # frozen from the third
    np.testing.assert_array_equal(seen[3], seen[1])

    @tf.function
    def forward(batch):
        return q(batch, training=True)

    graph = forward.get_concrete_function(tf.TensorSpec((None, 28, 28, 1))).graph
    branches = [op.name for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    assert branches and all("AssertGuard" in name for name in branches)  # only the flag checks: one branch traced


def test_bn_flag_set_behind_fits_back_fails_loudly(rng, sneaky_bn_freeze):
    """A flag changed after the step was traced, not through FreezeBatchNorm, stops training with a message that says
    to retrace, instead of training the branch the step was traced for."""
    from keras_eff.models import small_cnn

    q = ke.quantize_model(small_cnn(width=4))
    x, y = rng.random((32, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 32)
    ke.calibrate(q, x, progress=False)
    q.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="bn_frozen changed"):
        q.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[sneaky_bn_freeze()])
    q.make_train_function(force=True)  # retraced: trains on the frozen branch
    q.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_calibrate_sets_ranges_from_data(rng):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="fc")(inputs))
    q = ke.quantize_model(model)
    x = rng.uniform(-2, 3, (100, 4)).astype(np.float32)
    ke.calibrate(q, x, progress=False)
    input_range = ke.quantization.activation_quantizers(q)[0]
    assert input_range.range_min.numpy() == pytest.approx(x.min())
    assert input_range.range_max.numpy() == pytest.approx(x.max())
    with pytest.raises(ValueError, match="empty"):
        ke.calibrate(q, np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \(3, 5\).*expects \(n, 4\)"):
        ke.calibrate(q, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="no activation quantizers"):
        ke.calibrate(model, x)


def test_calibrate_takes_one_array_per_input_of_a_multi_input_model(rng):
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], layers.Dense(2)(layers.Concatenate()([a, b])))
    q = ke.quantize_model(model)
    xa = rng.uniform(-2, 3, (40, 4)).astype(np.float32)
    xb = rng.uniform(-7, 1, (40, 3)).astype(np.float32)
    ke.calibrate(q, ([xa, xb], np.zeros(40)), batch_size=16, progress=False)  # (xs, y) like fit's
    ranges = {r.name: r for r in ke.quantization.activation_quantizers(q) if r.model_input}
    assert len(ranges) == 2
    for x, name in ((xa, "a"), (xb, "b")):
        (r,) = [r for n, r in ranges.items() if n.startswith(name)]
        assert (r.range_min.numpy(), r.range_max.numpy()) == pytest.approx((x.min(), x.max()))
    with pytest.raises(ValueError, match=r"2 inputs \(a, b\).*list of 2 arrays"):
        ke.calibrate(q, xa)
    with pytest.raises(ValueError, match=r"\[40, 39\] samples"):
        ke.calibrate(q, [xa, xb[:39]])
    with pytest.raises(ValueError, match=r"calibration data\[1\].*expects \(n, 3\)"):
        ke.calibrate(q, [xa, xa])
    # a dict keyed by input name, as Keras's fit takes it, in any key order
    q2 = ke.quantize_model(model)
    ke.calibrate(q2, {"b": xb, "a": xa}, progress=False)
    for before, after in zip(ke.quantization.activation_quantizers(q), ke.quantization.activation_quantizers(q2)):
        assert float(before.range_min.numpy()) == pytest.approx(float(after.range_min.numpy()))
        assert float(before.range_max.numpy()) == pytest.approx(float(after.range_max.numpy()))
    with pytest.raises(ValueError, match=r"inputs \['a', 'b'\]; calibration data is keyed \['a', 'c'\]"):
        ke.calibrate(q2, {"a": xa, "c": xb})


def test_a_dead_activation_range_exports_a_file_xnnpack_loads(rng):
    """A ReLU dead on the calibration data has the range [0, 0]: its grid's scale was about 4e-11, and the file came
    out 138 LSB from the simulation here (in a squeeze-excite block, XNNPACK refused to load it). Its grid now spans
    [0, MIN_WIDTH]; zero stays exact."""
    inputs = keras.Input((6,))
    h = layers.Dense(4, activation="relu", name="dead")(inputs)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(h))
    model.get_layer("dead").set_weights([np.zeros((6, 4), np.float32), -np.ones(4, np.float32)])
    model.get_layer("fc").set_weights([np.ones((4, 3), np.float32), np.array([0.5, -0.3, 0.2], np.float32)])
    x = rng.random((64, 6)).astype(np.float32)
    q = ke.quantize_model(model)
    ke.calibrate(q, x, progress=False)
    ranges = [r for r in ke.quantization.activation_quantizers(q) if float(r.range_max.numpy()) == 0.0]
    assert len(ranges) == 1 and ranges[0].scale == pytest.approx(MIN_WIDTH / 255)
    data = te.to_tflite(q)
    assert te.compare(q, data, x).max_lsb_diff == 0  # loads with XNNPACK (the default) and computes as simulated


def test_unknown_layer_is_kept_float_and_reported(rng):
    inputs = keras.Input((6, 4))
    x = layers.UnitNormalization(name="norm")(inputs)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(x))
    with pytest.warns(
        UserWarning,
        match=r"kept 1 layers float(.|\n)*no quantized implementation: "
        r"UnitNormalization \(norm\)",
    ):
        q = ke.quantize_model(model)
    assert ke.quantization.quantization_report(q).float_layers[0][0] == "norm"
    ke.calibrate(q, rng.normal(0, 1, (32, 6, 4)).astype(np.float32), progress=False)
    with pytest.raises(te.FloatIslandError, match="representative_data"):
        te.to_tflite(q)


def test_config_overrides_and_skips():
    from keras_eff.models import small_cnn

    model = small_cnn(width=4)
    config = ke.QuantConfig(overrides={"Conv2D": {"weight_bits": 4}, "conv0": {"weight_bits": 6}}, skip=("logits",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = ke.quantize_model(model, config)
    bits = {l.layer.name: l.weight_bits for l in q.layers if isinstance(l, QuantizeWrapper) and l.has_kernel}
    assert bits == {"conv0": 6, "conv1": 4, "conv2": 4}
    assert ("logits", "skipped by QuantConfig") in ke.quantization.quantization_report(q).float_layers
    assert ke.QuantConfig.from_config(config.get_config()).overrides == config.overrides
    with pytest.raises(ValueError, match=r"conv9.*match no layer"):
        ke.quantize_model(model, ke.QuantConfig(overrides={"conv9": {"weight_bits": 4}}))
    with pytest.raises(ValueError, match="unknown settings"):
        ke.QuantConfig(overrides={"conv0": {"bitz": 4}})


def test_bad_models_are_refused():
    with pytest.raises(TypeError, match="Keras 3 model"):
        ke.quantize_model("not a model")

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(UnsupportedModelError, match=r"keras_eff\.quantize\("):
        ke.quantize_model(Net())
    inputs = keras.Input((3,))
    dense = layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    dense.kernel.assign(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        ke.quantize_model(model)


@pytest.mark.parametrize(
    "config, message",
    [
        (ke.QuantConfig(weight_bits=12), "weight_bits=12"),
        (ke.QuantConfig(weight_symmetric=False), "weight_symmetric=False"),
        (ke.QuantConfig(weight_granularity="per_channel"), "per-channel weights on Dense"),
        (ke.QuantConfig(activation_bits=16), "activation_bits=16"),
    ],
)
def test_export_refuses_what_int8_cannot_hold(config, message, rng):
    inputs = keras.Input((6, 6, 1))
    x = layers.Conv2D(2, 3, name="conv")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="fc")(layers.Flatten()(x)))
    q = ke.quantize_model(model, config)
    ke.calibrate(q, rng.normal(0, 1, (16, 6, 6, 1)).astype(np.float32), progress=False)
    q(np.zeros((1, 6, 6, 1), np.float32))  # the simulation itself runs
    with pytest.raises(te.TFLiteExportError, match=message):
        te.to_tflite(q)


def test_decorator_quantizes_a_subclassed_model(rng):
    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = ke.quantize(layers.Conv2D(4, 3, activation="relu"), quantize_inputs=True)
            self.flat = layers.Flatten()
            self.fc = ke.quantize(layers.Dense(3))

        def call(self, x):
            return self.fc(self.flat(self.conv(x)))

    net = Net()
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    net(x)
    ke.calibrate(net, x, progress=False)
    assert isinstance(net.conv, QuantizeWrapper) and net.conv.input_quantizer is not None
    data = te.to_tflite(net)  # every tensor carries a range: full int8 without data
    assert te.find_float_islands(data) == []
    cmp = te.compare(net, data, x)
    assert cmp.within_1_lsb >= 0.99
    with pytest.raises(TypeError, match="quantize_model"):
        ke.quantize(net)
    with pytest.raises(TypeError, match="Keras layer"):
        ke.quantize("conv")


def test_swish_hard_swish_and_fixed_range_into_pooling(rng):
    """Swish runs as LOGISTIC (fixed 1/256 grid) + MUL in TFLite; a pooling after a sigmoid keeps the sigmoid's
    fixed grid instead of requantizing. Both must match the simulation."""
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(8, 3, activation="swish", name="c1")(inputs)
    x = layers.Conv2D(8, 3, name="c2")(x)
    x = layers.Activation("hard_swish", name="hs")(x)
    x = layers.Activation("sigmoid", name="sg")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(4, name="fc")(x))
    model.set_weights([rng.normal(0, 0.5, w.shape) for w in model.get_weights()])
    q = ke.quantize_model(model)
    x = rng.normal(0, 1, (300, 8, 8, 2)).astype(np.float32)
    ke.calibrate(q, x, progress=False)
    data = te.to_tflite(q)
    ops = te.read_graph(data).op_names()
    assert "QUANTIZE" not in ops and {"LOGISTIC", "MUL", "HARD_SWISH", "MEAN"} <= set(ops)
    cmp = te.compare(q, data, x)
    assert cmp.within_1_lsb >= 0.99 and cmp.max_lsb_diff <= 1
