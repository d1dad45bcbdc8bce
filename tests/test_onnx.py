"""ONNX export with tf2onnx, run in onnxruntime, compared with Keras."""

import numpy as np
import pytest
from micro_models import fake_quant_model, random_images, tiny_cnn

import tflite_export as te


def test_float_onnx_matches_keras():
    model = tiny_cnn("residual_cnn")
    x = random_images(24, seed=5)
    onnx = te.to_onnx(model)
    got = te.run_onnx(onnx, x)
    ref = model.predict(x, verbose=0)
    assert got.shape == ref.shape == (24, 10)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    cmp = te.compare_onnx(model, onnx, x)
    assert cmp.max_rel_diff <= 1e-5 and cmp.argmax_agreement == 1.0
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(te.count_onnx_ops(onnx))


def test_onnx_batch_dimension_is_free(tmp_path):
    model = tiny_cnn("small_cnn")
    path = tmp_path / "m.onnx"
    path.write_bytes(te.to_onnx(model))
    for n in (1, 7):
        assert te.run_onnx(path, random_images(n)).shape == (n, 10)


def test_fake_quant_model_exports_quantize_dequantize_within_one_step():
    out_range = 4.0
    model = fake_quant_model(out_range)
    x = random_images(64, seed=6, shape=(12, 12, 1))
    onnx = te.to_onnx(model)
    ops = te.count_onnx_ops(onnx)
    assert ops.get("QuantizeLinear", 0) >= 3 and ops.get("DequantizeLinear", 0) >= 3
    step = 2 * out_range / 255
    got, ref = te.run_onnx(onnx, x), model.predict(x, verbose=0)
    assert np.max(np.abs(got - ref)) <= step  # the required bound
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.abs(ref).max()  # in fact the exported graph is exact
    on_grid = got / step  # zero is nudged onto the grid, so values are whole multiples of the step
    assert np.allclose(on_grid, np.round(on_grid), atol=1e-3)  # outputs sit on the int8 grid
    cmp = te.compare_onnx(model, onnx, x)
    assert not cmp.optimized and cmp.max_abs_diff <= step


def test_optimized_onnxruntime_is_measured_separately():
    model = fake_quant_model()
    x = random_images(16, seed=7, shape=(12, 12, 1))
    onnx = te.to_onnx(model)
    cmp = te.compare_onnx(model, onnx, x, optimize=True)
    assert cmp.optimized and "onnxruntime optimized" in str(cmp)
    assert te.run_onnx(onnx, x, optimize=True).shape == (16, 3)


def test_onnx_bad_inputs():
    with pytest.raises(TypeError, match="Keras 3 model"):
        te.to_onnx("not a model")
    with pytest.raises(ValueError, match="opset"):
        te.to_onnx(tiny_cnn("small_cnn"), opset=9)
    with pytest.raises(ValueError, match="onnxruntime cannot load"):
        te.run_onnx(b"\x00garbage", random_images(1))
