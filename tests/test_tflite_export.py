import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import tflite_export as te
from keras_eff.models import ZOO


@pytest.fixture(scope="module")
def exported_zoo(rep_images):
    """Each reference architecture (untrained, width 8) with its float and int8 (post-training) files."""
    out = {}
    for name, build in ZOO.items():
        keras.utils.set_random_seed(0)
        model = build(width=8)
        out[name] = (model, te.to_tflite(model, quantize=False), te.to_tflite(model, rep_images))
    return out


@pytest.mark.parametrize("name", sorted(ZOO))
def test_int8_export_is_fully_integer(exported_zoo, rep_images, name):
    model, float_file, int8_file = exported_zoo[name]
    assert te.find_float_islands(int8_file) == []
    tfl = te.TFLiteModel(int8_file)
    assert tfl.inputs[0]["dtype"] == np.int8 and tfl.outputs[0]["dtype"] == np.int8
    ops = te.read_graph(int8_file).op_names()
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops
    # the float file computes what Keras computes
    cmp = te.compare(model, float_file, rep_images[:50])
    assert cmp.max_abs_diff < 1e-4 and cmp.argmax_agreement == 1.0
    # the int8 file stays close to Keras on the data it was calibrated with
    cmp8 = te.compare(model, int8_file, rep_images[:100])
    assert cmp8.max_lsb_diff is not None and cmp8.within_1_lsb > 0.9


def test_expected_ops_appear(exported_zoo):
    assert "DEPTHWISE_CONV_2D" in te.read_graph(exported_zoo["ds_cnn"][2]).op_names()
    assert "ADD" in te.read_graph(exported_zoo["residual_cnn"][2]).op_names()
    assert "CONCATENATION" in te.read_graph(exported_zoo["concat_cnn"][2]).op_names()


class _RangeOnInput(layers.Layer):
    """Fake-quant on the model input only: everything after it has no range."""

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_vars(x, -1.0, 1.0)


def _island_model():
    inputs = keras.Input((8,))
    x = _RangeOnInput()(inputs)
    x = layers.Dense(4, name="unranged_dense")(x)
    return keras.Model(inputs, layers.Dense(3)(x))


def test_float_island_is_refused_naming_the_op():
    model = _island_model()
    assert te.has_fake_quant(model)
    with pytest.raises(te.FloatIslandError, match=r"FULLY_CONNECTED \(op #\d+\) in layer 'unranged_dense'") as info:
        te.to_tflite(model)
    assert info.value.problems and any("float" in p for p in info.value.problems)
    # the caller may accept float explicitly
    data = te.to_tflite(model, allow_float=True)
    assert te.find_float_islands(data)


def test_int8_of_float_model_needs_data_and_float_needs_none():
    model = ZOO["small_cnn"](width=4)
    assert not te.has_fake_quant(model)
    with pytest.raises(te.TFLiteExportError, match="representative_data"):
        te.to_tflite(model)
    data = te.to_tflite(model, quantize=False)
    assert te.TFLiteModel(data).inputs[0]["dtype"] == np.float32
    with pytest.raises(ValueError, match="only used for int8"):
        te.to_tflite(model, np.zeros((2, 28, 28, 1), np.float32), quantize=False)


def test_bad_representative_data_is_named():
    model = ZOO["small_cnn"](width=4)
    with pytest.raises(ValueError, match=r"shape \(4, 32, 32, 1\).*expects \(n, 28, 28, 1\)"):
        te.to_tflite(model, np.zeros((4, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="empty"):
        te.to_tflite(model, np.zeros((0, 28, 28, 1), np.float32))
    bad = np.zeros((4, 28, 28, 1), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        te.to_tflite(model, bad)
    with pytest.raises(TypeError, match="Keras 3 model"):
        te.to_tflite("model.keras")


def test_representative_data_as_dataset(rep_images):
    model = ZOO["small_cnn"](width=4)
    ds = tf.data.Dataset.from_tensor_slices((rep_images[:64], np.zeros(64))).batch(16)
    assert te.find_float_islands(te.to_tflite(model, ds)) == []


def _identity_int8():
    """Dense(3) with identity weights, exported int8 with inputs spanning [-1, 1]."""
    inputs = keras.Input((3,))
    dense = layers.Dense(3, name="identity")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    rep = np.random.default_rng(0).uniform(-1, 1, (100, 3)).astype(np.float32)
    rep[0] = [-1, 1, 0]
    return model, te.to_tflite(model, rep)


def test_compare_counts_lsb_and_near_ties():
    model, data = _identity_int8()
    scale, zp = te.TFLiteModel(data).outputs[0]["quantization"]
    base = (round(0.8 / scale) + 0.3) * scale  # on the grid plus 0.3 LSB
    x = np.array([[0.5, -0.5, 0.0], [0.10, 0.10 + 0.5 * scale, -0.9], [base - 6.4 * scale, base, 0.2]], np.float32)
    exact = te.quantize(model.predict(x, verbose=0), scale, zp).astype(np.int32)
    assert exact[2, 1] - exact[2, 0] == 6  # 6.4 LSB apart in float, 6 on the grid
    fake = exact.copy()
    fake[0, 2] += 2  # 2 LSB off, argmax unchanged
    fake[1] = [exact[1, 0] + 1, exact[1, 1], exact[1, 2]]  # flips on a half-LSB gap: a near-tie
    # both classes meet in the middle (3 LSB each): the tie goes to class 0, though Keras had them 6.4 LSB apart,
    # more than the 3 + 3 LSB errors explain
    fake[2, 0] += 3
    fake[2, 1] -= 3
    cmp = te.compare(model, data, x, tflite_outputs=fake.astype(np.int8))
    assert cmp.max_lsb_diff == 3
    assert cmp.within_1_lsb == pytest.approx(np.mean(np.abs(fake - exact) <= 1))
    assert cmp.argmax_agreement == pytest.approx(1 / 3)
    assert cmp.disagreements == 2 and cmp.near_tie_disagreements == 1
    assert not cmp.all_disagreements_near_ties
    assert cmp.disagreement_gaps_lsb == pytest.approx([0.5, 6.4], abs=0.01)
    real = te.compare(model, data, x)  # row 1 ties on the grid: a disagreement, but a near-tie
    assert real.max_lsb_diff <= 1 and real.disagreements == 1 and real.all_disagreements_near_ties


def test_mac_count_matches_hand_computation():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, name="conv")(inputs)  # 8x8x8 outputs, each 3*3*3 MACs
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)  # 8x8x8 outputs, 9 MACs each
    x = layers.Conv2DTranspose(4, 2, strides=2, name="deconv")(x)  # 8x8x8 inputs, each 2*2*4 MACs
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5, name="fc")(x)  # 4*5 MACs
    model = keras.Model(inputs, outputs)
    for layer in model.layers:  # non-zero biases, so that the converter keeps them all
        if layer.weights:
            layer.set_weights([w + 0.1 for w in layer.get_weights()])
    counts = te.count_macs(te.to_tflite(model, quantize=False))
    by_op = counts.by_op_type()
    assert by_op["CONV_2D"] == 8 * 8 * 8 * 27
    assert by_op["DEPTHWISE_CONV_2D"] == 8 * 8 * 8 * 9
    assert by_op["TRANSPOSE_CONV"] == 8 * 8 * 8 * 2 * 2 * 4
    assert by_op["FULLY_CONNECTED"] == 4 * 5
    assert counts.total_params == model.count_params()


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (b"\x00" * 64, "TFL3"),
    ],
)
def test_empty_and_foreign_bytes_are_refused(blob, message):
    with pytest.raises(te.InvalidTFLiteModel, match=message):
        te.TFLiteModel(blob)


def test_truncated_file_is_refused(exported_zoo, tmp_path):
    data = exported_zoo["small_cnn"][2]
    with pytest.raises(te.InvalidTFLiteModel, match="corrupt or truncated"):
        te.TFLiteModel(data[: len(data) // 2])
    with pytest.raises(te.InvalidTFLiteModel, match="cannot read"):
        te.TFLiteModel(tmp_path / "missing.tflite")


def test_runner_batches_and_latency(exported_zoo, rep_images):
    model, float_file, int8_file = exported_zoo["small_cnn"]
    tfl = te.TFLiteModel(int8_file)
    whole = tfl.predict(rep_images[:70], batch_size=32)
    assert whole.shape == (70, 10)
    np.testing.assert_array_equal(whole[:5], tfl.run(rep_images[:5]))
    with pytest.raises(ValueError, match="expects shape"):
        tfl.run(np.zeros((2, 27, 28, 1), np.float32))
    lat = tfl.latency(runs=20, warmup=5)
    assert 0 < lat.p10_us <= lat.median_us <= lat.p90_us


def test_quantize_rounds_half_away_from_zero():
    q = te.quantize(np.array([0.5, 1.5, -0.5, -1.5, 200.0, -200.0]), 1.0, 0)
    assert list(q) == [1, 2, -1, -2, 127, -128]
    np.testing.assert_allclose(te.dequantize(q, 0.5, 1), (q.astype(np.float32) - 1) * 0.5)


def test_atomic_write_refuses_overwrite_without_permission(tmp_path):
    path = te.atomic_write(tmp_path / "a.bin", b"one")
    with pytest.raises(FileExistsError, match="--force"):
        te.atomic_write(path, b"two", overwrite=False)
    assert path.read_bytes() == b"one"
    te.atomic_write(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_check_samples_names_what_is_wrong():
    x = np.zeros((5, 4, 3), np.uint8)
    out = te.check_samples(x, (4, None), "calibration data", "model 'm'", max_samples=3)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    with pytest.raises(ValueError, match=r"calibration data has shape \(5, 4, 3\), but model 'm' expects \(n, 4, 2\)"):
        te.check_samples(x, (4, 2), "calibration data", "model 'm'")
    with pytest.raises(ValueError, match="calibration data is empty"):
        te.check_samples(np.zeros((0, 4)), (4,), "calibration data")
    late_nan = np.zeros((10, 2), np.float32)
    late_nan[9, 1] = np.inf  # beyond max_samples, still refused: the whole array is checked
    with pytest.raises(ValueError, match="NaN or infinite"):
        te.check_samples(late_nan, (2,), "data", max_samples=2)
    with pytest.raises(TypeError, match="numeric"):
        te.check_samples(np.array([["a"]]), None, "data")
    assert te.check_samples(np.ones((2, 7)), None, "data").shape == (2, 7)  # no declared shape: anything goes


@keras.saving.register_keras_serializable(package="tests")
class _CountsCalls(layers.Layer):
    """Doubles its input and counts how often it is called (traced)."""

    calls = 0

    def call(self, x):
        type(self).calls += 1
        return x * 2.0


def test_export_traces_the_model_once_and_keeps_its_inputs_by_name(rng):
    """The SavedModel the converter reads holds one trace of the model (Keras's model.export made three); a model
    with two inputs keeps their names in the file, and each input feeds what it fed in Keras."""
    image = keras.Input((4, 4, 1), name="image")
    extra = keras.Input((3,), name="extra")
    x = layers.Concatenate()([layers.Flatten()(_CountsCalls()(image)), extra])
    model = keras.Model([image, extra], layers.Dense(2)(x))
    _CountsCalls.calls = 0
    blob = te.to_tflite(model, quantize=False)
    assert _CountsCalls.calls == 1
    xs = {"image": rng.normal(size=(5, 4, 4, 1)).astype(np.float32), "extra": rng.normal(size=(5, 3))}
    tfl = te.TFLiteModel(blob)
    assert sorted(tfl.input_names) == ["extra", "image"]
    np.testing.assert_allclose(tfl.predict(xs), model.predict([xs["image"], xs["extra"]], verbose=0), atol=1e-5)
    batch_one = te.TFLiteModel(te.to_tflite(model, quantize=False, batch_size=1))
    assert batch_one.fixed_batch == 1 and batch_one.input_names == tfl.input_names


class _Private(keras.Model):
    """A subclassed model whose class name starts with '_': Keras names it '__private', which TensorFlow refuses as a
    scope name."""

    def __init__(self):
        super().__init__()
        self.dense = layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_a_model_name_tensorflow_refuses_as_a_scope_is_named_with_the_fix():
    model = _Private()
    model(np.zeros((1, 4), np.float32))
    with pytest.raises(te.TFLiteExportError, match=r"'__private'.*give the model another name"):
        te.to_tflite(model, quantize=False)
    # refused before Keras's export enters a name scope it would leave open (every later variable under '__private/')
    assert keras.Variable(1.0, name="after").path == "after"
