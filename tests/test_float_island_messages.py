"""A float island is refused with a message that names the op running in float and the Keras layer it came from."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_eff as ke
import tflite_export as te
from keras_eff import cli


@keras.saving.register_keras_serializable(package="test_float_islands")
class RunningTotal(layers.Layer):
    """A layer calling ``tf.cumsum``: TFLite has no int8 CUMSUM, so the converter leaves it float."""

    def call(self, x):
        return tf.cumsum(x, axis=1)


def _cumsum_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 4), name="seq")
    x = layers.Dense(4, name="fc0")(inp)
    x = RunningTotal(name="running_total")(x)
    x = layers.Flatten(name="flat")(x)
    return keras.Model(inp, layers.Dense(3, name="fc")(x), name="cumsum_model")


def _nested_cumsum_model():
    """The CUMSUM sits inside a nested model whose layer names repeat the outer ones."""
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((8, 4))
    y = layers.Dense(4, name="dense_1")(inner_in)
    inner = keras.Model(inner_in, RunningTotal(name="dense")(y), name="block")
    inp = keras.Input((8, 4))
    x = inner(layers.Dense(4, name="dense_2")(inp))
    return keras.Model(inp, layers.Dense(3, name="fc")(layers.Flatten()(x)), name="outer")


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(0).normal(size=(32, 8, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(xs):
    with pytest.warns(UserWarning, match="running_total"):  # kept float: keras_eff has no quantized cumsum
        q = ke.quantize_model(_cumsum_model())
    ke.calibrate(q, xs, progress=False)
    return q


def test_message_names_the_float_op_and_its_layer_not_only_the_dequantize(quantized, xs):
    with pytest.raises(te.FloatIslandError) as info:
        te.to_tflite(quantized, representative_data=xs)
    msg = str(info.value)
    assert "CUMSUM" in msg and "layer 'running_total'" in msg, msg
    if "DEQUANTIZE" in msg:  # the op that runs in float comes first, the DEQUANTIZE in front of it after
        assert msg.index("CUMSUM") < msg.index("DEQUANTIZE"), msg
    # the tensors around it have int8 ranges: more data cannot help, the op has no int8 kernel
    assert "no int8 kernel" in msg and "allow_float=True" in msg, msg
    ops = info.value.float_ops
    assert [(o.op, o.layer) for o in ops] == [("CUMSUM", "running_total")], ops
    assert ops[0].tensor.endswith("Cumsum") and ops[0].bounded


def test_without_representative_data_only_the_layer_with_no_int8_kernel_is_float(quantized):
    """quantize_model gave the CUMSUM layer's output a range of its own: the layers after it stay int8 even without
    data, and the message says more data would not help."""
    with pytest.raises(te.FloatIslandError) as info:
        te.to_tflite(quantized)
    msg = str(info.value)
    assert "CUMSUM" in msg and "layer 'running_total'" in msg, msg
    assert [(o.op, o.layer) for o in info.value.float_ops] == [("CUMSUM", "running_total")]
    assert "FULLY_CONNECTED" not in msg and "no int8 kernel" in msg, msg
    data = te.to_tflite(quantized, allow_float=True)
    assert (
        te.compare(quantized, data, np.random.default_rng(1).normal(size=(64, 8, 4)).astype(np.float32)).max_lsb_diff
        == 0
    )


def test_layer_inside_a_nested_model_is_named_by_its_path(xs):
    with pytest.raises(te.FloatIslandError) as info:
        te.to_tflite(_nested_cumsum_model(), representative_data=xs)
    msg = str(info.value)
    assert "CUMSUM" in msg and "layer 'block/dense'" in msg, msg
    assert [o.layer for o in info.value.float_ops] == ["block/dense"]


def test_file_alone_names_the_op_and_the_tensor_name_path(quantized, xs):
    data = te.to_tflite(quantized, representative_data=xs, allow_float=True)
    with pytest.raises(te.FloatIslandError) as info:
        te.check_int8(data)
    msg = str(info.value)
    assert "CUMSUM" in msg and "running_total" in msg and "/Cumsum'" in msg, msg
    assert info.value.float_ops[0].layer is None
    # with the Keras model at hand the layer is named
    with pytest.raises(te.FloatIslandError, match="layer 'running_total'"):
        te.check_int8(data, keras_model=quantized)


def test_cli_export_names_the_float_op_and_layer(xs, tmp_path, capsys):
    _cumsum_model().save(tmp_path / "cumsum.keras")
    np.save(tmp_path / "rep.npy", xs)
    out = tmp_path / "out"
    rc = cli.main(
        [
            "export",
            str(tmp_path / "cumsum.keras"),
            "-o",
            str(out),
            "--rep-data",
            str(tmp_path / "rep.npy"),
            "--no-micro",
        ]
    )
    err = capsys.readouterr().err
    assert rc == cli.EXIT_EXPORT_FAILED, err
    assert "CUMSUM" in err and "layer 'running_total'" in err, err
    assert not out.exists()


def test_model_report_warning_names_the_float_op(quantized, xs):
    data = te.to_tflite(quantized, representative_data=xs, allow_float=True)
    report = te.model_report(data, latency_runs=0, arena=False)
    warning = next(w for w in report.data["warnings"] if "not fully int8" in w)
    assert "CUMSUM (op #" in warning and "running_total" in warning, warning


def _layer_norm_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 4))
    x = layers.Dense(16, name="fc0")(inp)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(3, name="fc")(x), name="ln_model")


def test_converter_ptq_float_op_points_to_quantize_model_which_exports_it_in_int8(xs):
    """The converter's own PTQ leaves LayerNormalization's NEG float (no int8 kernel); the message says that this
    is the converter's choice for a float model and names the keras-eff route, which is full int8. A quantized
    model's float op (the CUMSUM above) gets no such advice: it was quantized already."""
    model = _layer_norm_model()
    with pytest.raises(te.FloatIslandError) as info:
        te.to_tflite(model, representative_data=xs)
    msg = str(info.value)
    assert "NEG" in msg and "layer 'ln'" in msg, msg
    assert "post-training quantization of a float model" in msg and "keras_eff.quantize_model" in msg, msg
    assert any(op.op == "NEG" and op.bounded for op in info.value.float_ops)
    q = ke.quantize_model(model)
    ke.calibrate(q, xs, progress=False)
    data = te.to_tflite(q)  # full int8: the float-island check passes
    assert te.compare(q, data, xs).max_lsb_diff <= 1


def test_quantized_model_float_op_gets_no_converter_ptq_advice(quantized, xs):
    with pytest.raises(te.FloatIslandError) as info:
        te.to_tflite(quantized, representative_data=xs)
    assert "post-training quantization of a float model" not in str(info.value)
