"""A small transformer (LayerNormalization, MultiHeadAttention, Dense with GELU on sequences, residual Adds) through
quantize_model to a full-int8 file (issue #17, point 3): nothing kept float, the file has no float island, one train
step and a .keras round trip keep it so. At inference the attention and the normalization compute as LiteRT's
kernels do (integer projections, gemmlowp-rounded BATCH_MATMULs, the MEAN/ADD/MUL of the chosen kernels, the built-in
RSQRT), so the simulation equals the file: every logit bit-exact on XNNPACK (40 % before the attention's integer
path) and on the built-in kernels (25 % before)."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff.quantization import quantization_report


def _transformer(steps=16, width=32, activation="gelu"):
    inputs = keras.Input((steps, width))
    x = layers.Dense(width, name="embed")(inputs)
    for b in range(2):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln_{b}_a")(x)
        h = layers.MultiHeadAttention(2, 16, name=f"attention_{b}")(h, h)
        x = layers.Add(name=f"residual_{b}_a")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln_{b}_b")(x)
        h = layers.Dense(2 * width, activation=activation, name=f"mlp_{b}_up")(h)
        h = layers.Dense(width, name=f"mlp_{b}_down")(h)
        x = layers.Add(name=f"residual_{b}_b")([x, h])
    return keras.Model(inputs, layers.Dense(10, name="logits")(layers.GlobalAveragePooling1D()(x)))


@pytest.fixture(scope="module")
def quantized():
    keras.utils.set_random_seed(0)
    model = _transformer()
    x = np.random.default_rng(0).normal(0, 1, (96, 16, 32)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:64], progress=False)
    return model, qat, x


def test_every_layer_is_quantized_and_the_file_is_full_int8(quantized):
    model, qat, x = quantized
    report = quantization_report(qat)
    assert not report.float_layers, str(report)
    assert {"attention_0", "attention_1", "ln_0_a", "mlp_0_up"} <= set(report.quantized)
    data = te.to_tflite(qat)  # refuses float islands
    ops = te.read_graph(data).op_names()
    assert {"BATCH_MATMUL", "SOFTMAX", "RSQRT", "GELU"} <= set(ops)
    cmp = te.compare(qat, data, x)
    assert cmp.max_lsb_diff == 0 and cmp.argmax_agreement == 1.0, str(cmp)
    ke.quantization.set_integer_kernels(qat, "builtin")  # LiteRT without its delegate: other roundings, also exact
    try:
        builtin = te.compare(qat, data, x, use_xnnpack=False)
    finally:
        ke.quantization.set_integer_kernels(qat, "xnnpack")
    assert builtin.max_lsb_diff == 0, str(builtin)
    assert te.unsupported_micro_ops(data) == ["GELU"]  # TFLite Micro has no GELU kernel: named, not run
    # the simulation stays close to the float model it was made from (8-bit attention and normalization)
    float_out, quant_out = model.predict(x, verbose=0), qat.predict(x, verbose=0)
    agreement = np.mean(np.argmax(float_out, -1) == np.argmax(quant_out, -1))
    assert agreement >= 0.8, agreement
    assert np.mean(np.abs(quant_out - float_out)) < 0.1 * np.mean(np.abs(float_out))


def test_tflite_micro_runs_a_relu_transformer_as_simulated():
    """With a ReLU MLP (Micro has no GELU) TFLite Micro runs the transformer from a batch-1 file, and the simulation
    with its kernels ("micro") equals it bit for bit: LayerNormalization's MEAN, ADD, MUL and RSQRT as Micro computes
    them, the attention's BATCH_MATMULs and projections with gemmlowp's rounding (max 8 LSB while the normalization ran
    the float simulation on its grids)."""
    keras.utils.set_random_seed(0)
    qat = ke.quantize_model(_transformer(activation="relu"))
    x = np.random.default_rng(1).normal(0, 1, (96, 16, 32)).astype(np.float32)
    ke.calibrate(qat, x[:64], progress=False)
    data = te.to_tflite(qat, batch_size=1)
    raw = te.run_micro(data, x[64:])[0]
    ke.quantization.set_integer_kernels(qat, "micro")
    cmp = te.compare(qat, data, x[64:], tflite_outputs=raw)
    assert cmp.max_lsb_diff == 0, str(cmp)


def test_a_train_step_and_a_round_trip_keep_it_exportable(quantized, tmp_path):
    _, qat, x = quantized
    qat.compile(optimizer=keras.optimizers.SGD(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x[:32], np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "transformer.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-5)
    cmp = te.compare(loaded, te.to_tflite(loaded), x)
    assert cmp.max_lsb_diff == 0, str(cmp)  # the inputs' grids came back with the file: no re-linking


@pytest.mark.parametrize("with_key", [False, True])
def test_cross_attention_reads_each_input_on_its_own_grid(with_key):
    """Query, value and key from different layers (8 and 6 steps): each projection requantizes from its own
    input's grid, placed by quantize_model and saved with the layer."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 16))
    query = layers.Dense(16, name="query_in")(inputs)
    value = layers.Conv1D(16, 3, name="value_in")(inputs)  # 6 steps
    key = layers.Conv1D(16, 3, activation="relu", name="key_in")(inputs) if with_key else None
    y = layers.MultiHeadAttention(2, 8, name="cross")(query, value, key=key)
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling1D()(y)))
    x = np.random.default_rng(1).normal(0, 1, (64, 8, 16)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x, progress=False)
    grids = [r.name for r in qat.get_layer("cross")._input_ranges]
    assert len(set(grids)) == (3 if with_key else 2), grids
    cmp = te.compare(qat, te.to_tflite(qat), x)
    assert cmp.max_lsb_diff == 0, str(cmp)


def test_xnnpack_takes_the_batch_matmul_whose_second_input_has_zero_point_0():
    """LiteRT's XNNPACK delegate takes an int8 BATCH_MATMUL only where its second input's zero point is 0, and then
    requantizes in float32 (half to even); the other runs the built-in kernel (gemmlowp). With the value's range
    made symmetric (zero point 0) and the key's left as calibrated (zero point not 0), each BATCH_MATMUL is emulated
    as the kernel that runs it: every output bit-exact on XNNPACK and on the built-in kernels."""
    from keras_eff.quantization.attention import STEPS

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 32))
    h = layers.Dense(32, name="embed")(inputs)
    model = keras.Model(inputs, layers.MultiHeadAttention(2, 16, name="attention")(h, h))
    x = np.random.default_rng(0).normal(0, 1, (96, 16, 32)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:64], progress=False)
    steps = dict(zip(STEPS, qat.get_layer("attention").step_quantizers))
    hi = float(max(-steps["value"].range_min.numpy(), steps["value"].range_max.numpy()))
    steps["value"].range_min.assign(-hi * 128 / 127)
    steps["value"].range_max.assign(hi)
    assert float(steps["value"].tflite_zero_point()) == 0.0
    assert float(steps["key"].tflite_zero_point()) != 0.0
    data = te.to_tflite(qat)
    cmp = te.compare(qat, data, x)
    assert cmp.max_lsb_diff == 0, str(cmp)
    ke.quantization.set_integer_kernels(qat, "builtin")
    builtin = te.compare(qat, data, x, kernels="builtin")
    assert builtin.max_lsb_diff == 0, str(builtin)


def test_masked_attention_stays_float_and_says_why():
    inputs = keras.Input((8, 16))
    mask = keras.Input((8, 8), dtype="bool")
    y = layers.MultiHeadAttention(2, 8, name="masked")(inputs, inputs, attention_mask=mask)
    model = keras.Model([inputs, mask], layers.Dense(4)(layers.GlobalAveragePooling1D()(y)))
    with pytest.warns(UserWarning, match="masked"):
        qat = ke.quantize_model(model)
    assert ("masked", "MultiHeadAttention with an attention_mask") in quantization_report(qat).float_layers


@pytest.mark.parametrize("with_key", [False, True])
def test_dot_product_attention_layer_is_int8_and_exact(with_key, tmp_path):
    """``keras.layers.Attention`` (dot-product scores): BATCH_MATMUL, SOFTMAX, BATCH_MATMUL, each on its own range,
    the inputs read on their producers' grids. It was a float island (the converter's own PTQ makes it int8)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 8))
    query, value, key = (layers.Dense(8, name=n)(inputs) for n in ("q", "v", "k"))
    attended = layers.Attention(name="attend")([query, value, key] if with_key else [query, value])
    model = keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling1D()(attended)))
    x = np.random.default_rng(0).normal(0, 1, (300, 16, 8)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:200], progress=False)
    assert "attend" in quantization_report(qat).quantized
    data = te.to_tflite(qat)
    assert te.read_graph(data).op_names().count("BATCH_MATMUL") == 2
    for kernels in ("xnnpack", "builtin"):
        ke.quantization.set_integer_kernels(qat, kernels)
        cmp = te.compare(qat, data, x, kernels=kernels)
        assert cmp.max_lsb_diff == 0, (kernels, str(cmp))
    path = tmp_path / "attention.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), qat.predict(x, verbose=0))


def test_attention_forms_int8_cannot_hold_stay_float_and_are_named():
    inputs = keras.Input((6, 4))
    scaled = layers.Attention(use_scale=True, name="scaled")([inputs, inputs])
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(scaled)))
    with pytest.warns(UserWarning, match="kept 1 layers float"):
        report = quantization_report(ke.quantize_model(model))
    assert ("scaled", "Attention with learned score scaling or concat scores") in report.float_layers
