"""Microcontroller package: C sources, op support, tensor arena search, TFLite Micro vs LiteRT, report, file writes."""

import gzip
import json
import math
import shutil
import subprocess

import keras
import numpy as np
import pytest
from micro_models import gelu_model, random_images, tiny_cnn

import tflite_export as te

MAIN_C = r"""
#include <stdint.h>
#include <stdio.h>
#include "{name}.h"
int main(int argc, char **argv) {{
  if (argc != 2) return 2;
  FILE *f = fopen(argv[1], "wb");
  if (!f) return 3;
  if (fwrite({name}_data, 1, {name}_data_len, f) != {name}_data_len) return 4;
  fclose(f);
  printf("%u %.9g %d %.9g %d %d\n", (unsigned)((uintptr_t){name}_data % {upper}_DATA_ALIGNMENT),
         {name}_input_scale, {name}_input_zero_point, {name}_output_scale, {name}_output_zero_point,
         {upper}_TENSOR_ARENA_SIZE);
  return 0;
}}
"""


@pytest.fixture(scope="module")
def tflites():
    """int8 TFLite files of two tiny architectures (plain convs; depthwise-separable)."""
    x = random_images(32)
    return {kind: te.to_tflite(tiny_cnn(kind), representative_data=x) for kind in ("small_cnn", "ds_cnn")}


@pytest.fixture(scope="module")
def gelu_tflite():
    return te.to_tflite(gelu_model(), quantize=False)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_array_compiles_into_the_tflite_bytes(tmp_path, tflites):
    data = tflites["ds_cnn"]
    src = te.to_c_source(data, name="kws_model", arena_bytes=12345)
    for fname, text in src.files.items():
        (tmp_path / fname).write_text(text)
    (tmp_path / "main.c").write_text(MAIN_C.format(name="kws_model", upper="KWS_MODEL"))
    exe = tmp_path / "dump"
    subprocess.run(
        [
            "cc",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-o",
            str(exe),
            str(tmp_path / "main.c"),
            str(tmp_path / "kws_model.c"),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe), str(tmp_path / "dumped.tflite")], check=True, capture_output=True, text=True)
    assert (tmp_path / "dumped.tflite").read_bytes() == data
    align, in_scale, in_zp, out_scale, out_zp, arena = out.stdout.split()
    assert int(align) == 0 and int(arena) == 12345
    tfl = te.TFLiteModel(data)
    (s_in, z_in), (s_out, z_out) = tfl.inputs[0]["quantization"], tfl.outputs[0]["quantization"]
    assert np.float32(float(in_scale)) == np.float32(s_in) and int(in_zp) == z_in
    assert np.float32(float(out_scale)) == np.float32(s_out) and int(out_zp) == z_out


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_c_source_also_compiles_as_cxx(tmp_path, tflites):
    src = te.to_c_source(tflites["small_cnn"], name="model")
    for fname, text in src.files.items():
        (tmp_path / fname).write_text(text)
    subprocess.run(
        [
            "c++",
            "-std=c++17",
            "-Wall",
            "-Werror",
            "-x",
            "c++",
            "-c",
            str(tmp_path / "model.c"),
            "-o",
            str(tmp_path / "model.o"),
        ],
        check=True,
        capture_output=True,
    )


def test_op_resolver_registers_each_op_once(tflites):
    src = te.to_c_source(tflites["ds_cnn"], name="model")
    assert src.ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"]
    calls = [line.strip() for line in src.op_resolver.splitlines() if "resolver.Add" in line]
    assert calls == [
        f"TF_LITE_ENSURE_STATUS(resolver.{m}());"
        for m in ("AddConv2D", "AddDepthwiseConv2D", "AddMean", "AddFullyConnected")
    ]
    assert "#define MODEL_NUM_OPS 4" in src.header
    assert "MicroMutableOpResolver<MODEL_NUM_OPS>" in src.op_resolver


def test_resolver_method_names():
    assert [
        te.resolver_method(n)
        for n in (
            "MAX_POOL_2D",
            "BATCH_TO_SPACE_ND",
            "PADV2",
            "BATCH_MATMUL",
            "RELU6",
            "L2_NORMALIZATION",
            "UNIDIRECTIONAL_SEQUENCE_LSTM",
        )
    ] == [
        "AddMaxPool2D",
        "AddBatchToSpaceNd",
        "AddPadV2",
        "AddBatchMatMul",
        "AddRelu6",
        "AddL2Normalization",
        "AddUnidirectionalSequenceLSTM",
    ]


@pytest.mark.parametrize("bad", ["1model", "my-model", "float", ""])
def test_c_name_must_be_an_identifier(tflites, bad):
    with pytest.raises(ValueError, match="C identifier"):
        te.to_c_source(tflites["small_cnn"], name=bad)


@pytest.mark.parametrize("kind", ["small_cnn", "ds_cnn"])
def test_arena_found_is_the_smallest_that_works(tflites, kind):
    data = tflites[kind]
    est = te.find_arena_size(data, margin=0.25)
    # fresh processes, independent of the search's own worker
    assert te.try_arena(data, est.host_min_bytes)
    assert not te.try_arena(data, est.host_min_bytes - 1)
    assert est.recommended_bytes == math.ceil(est.host_min_bytes * 1.25 / 16) * 16
    assert est.recommended_bytes % 16 == 0 and est.recommended_bytes > est.host_min_bytes


def test_far_too_small_arena_does_not_crash_the_caller(tflites):
    assert te.try_arena(tflites["small_cnn"], 64) is False  # TFLite Micro segfaults here: the child takes it


def test_micro_matches_litert(tflites):
    x = random_images(40, seed=3)
    data = tflites["small_cnn"]
    check = te.check_micro(data, x)
    micro = te.run_micro(data, x, arena_size=check.arena_bytes)[0]
    tfl = te.TFLiteModel(data, use_xnnpack=False)
    lite = tfl.predict(te.quantize(x, *tfl.inputs[0]["quantization"]), raw_inputs=True, dequantize_outputs=False)
    diff = np.abs(micro.astype(int) - lite.astype(int))
    assert micro.dtype == np.int8 and micro.shape == (40, 10)
    assert check.n == 40 and check.max_lsb_diff == diff.max() <= 1
    assert check.bit_exact_samples == pytest.approx(np.mean(diff.max(axis=1) == 0))
    assert check.bit_exact_samples >= 0.8 and check.argmax_agreement >= 0.95
    assert check.passed(max_lsb=1)


def test_micro_check_rejects_mis_shaped_inputs(tflites):
    with pytest.raises(ValueError, match=r"expects \(n, 28, 28, 1\)"):
        te.check_micro(tflites["small_cnn"], np.zeros((4, 32, 32, 3), np.float32), arena_size=65536)


def test_supported_ops_found_by_probing():
    ops = te.micro_supported_ops()
    assert {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "MAX_POOL_2D",
        "MEAN",
        "ADD",
        "SOFTMAX",
        "RESHAPE",
        "CONCATENATION",
    } <= ops
    assert not {"GELU", "CUSTOM", "STABLEHLO_ADD"} & ops


def test_unsupported_op_is_named_before_flashing(gelu_tflite):
    assert te.unsupported_micro_ops(gelu_tflite) == ["GELU"]
    with pytest.raises(te.MicroRuntimeError, match="GELU"):
        te.micro_package(gelu_tflite)
    with pytest.raises(te.MicroRuntimeError, match="GELU"):  # an op error, not "arena too small"
        te.find_arena_size(gelu_tflite)
    report = te.model_report(gelu_tflite, latency_runs=0)
    assert report.as_dict()["unsupported_micro_ops"] == ["GELU"]
    assert any("GELU" in w and "cannot run" in w for w in report.warnings)
    assert "| GELU | 1 | 0 | **no** |" in report.to_markdown()


def test_micro_package_writes_all_files(tmp_path, tflites):
    data = tflites["small_cnn"]
    pkg = te.micro_package(data, name="net", x=random_images(20, seed=1))
    written = pkg.write(tmp_path / "mcu")
    assert sorted(p.name for p in written) == ["net.c", "net.h", "net.tflite", "net_micro.json", "net_op_resolver.h"]
    assert (tmp_path / "mcu" / "net.tflite").read_bytes() == data
    meta = json.loads((tmp_path / "mcu" / "net_micro.json").read_text())
    assert meta["arena"]["host_min_bytes"] == pkg.arena.host_min_bytes
    assert meta["micro_check"]["n"] == 20
    assert f"#define NET_TENSOR_ARENA_SIZE {pkg.arena.recommended_bytes}" in pkg.sources.header
    before = (tmp_path / "mcu" / "net.c").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--force"):
        pkg.write(tmp_path / "mcu")
    assert (tmp_path / "mcu" / "net.c").stat().st_mtime_ns == before


def test_write_files_is_all_or_nothing(tmp_path):
    target = tmp_path / "new" / "deeper"
    with pytest.raises(TypeError):
        te.write_files(target, {"a.txt": "fine", "b.bin": b"fine", "c.txt": 3})  # the third cannot be written
    assert not (tmp_path / "new").exists()
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError):
        te.write_files(tmp_path, {"fresh.txt": "x", "keep.txt": "new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    te.write_files(tmp_path, {"fresh.txt": "x", "keep.txt": "new"}, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "new" and not list(tmp_path.glob(".*.tmp"))


def test_report_figures(tmp_path, tflites):
    int8 = tflites["small_cnn"]
    float_tfl = te.to_tflite(tiny_cnn("small_cnn"), quantize=False)
    report = te.model_report(
        int8, float_model=float_tfl, x=random_images(16, seed=2), name="tiny", latency_runs=20, latency_rounds=2
    )
    d = report.as_dict()
    macs = te.count_macs(int8)
    assert d["summary"]["file_bytes"] == len(int8)
    assert d["summary"]["gzip_bytes"] == len(gzip.compress(int8, 9))
    assert d["summary"]["macs"] == macs.total_macs and d["summary"]["parameters"] == macs.total_params
    assert [o["macs"] for o in d["macs_per_op"]] == [o.macs for o in macs.ops]
    assert {o["op"]: o["count"] for o in d["ops"]} == {"CONV_2D": 3, "MAX_POOL_2D": 2, "MEAN": 1, "FULLY_CONNECTED": 1}
    assert all(o["micro"] for o in d["ops"]) and d["warnings"] == []
    assert set(d["latency"]) == {"int8", "float"} and d["latency"]["int8"]["median_us"] > 0
    assert d["micro_check"]["n"] == 16 and d["arena"]["host_min_bytes"] > 0
    written = report.write(tmp_path / "rep")
    assert sorted(p.name for p in written) == ["rep.json", "rep.md"]
    assert json.loads((tmp_path / "rep.json").read_text())["summary"]["macs"] == macs.total_macs
    md = (tmp_path / "rep.md").read_text()
    assert f"{macs.total_macs:,}" in md and "tensor arena" in md and "LiteRT latency, float" in md


@pytest.mark.parametrize("activation,missing", [("elu", ["EXP"]), ("softplus", ["LOG"]), ("squareplus", ["SQRT"])])
def test_int8_exp_log_and_sqrt_count_as_missing(activation, missing):
    """TFLite Micro registers EXP, LOG and SQRT with float32 kernels only: an int8 one (the chains quantize_model
    writes for ELU, softplus or squareplus) is named before flashing, and the interpreter does refuse the file."""
    import keras_eff as ke

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Activation(activation)(keras.layers.Dense(8)(inputs)))
    x = np.random.default_rng(0).normal(0, 2, (32, 8)).astype(np.float32)
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x, progress=False)
    data = te.to_tflite(qat)
    assert te.unsupported_micro_ops(data) == missing
    with pytest.raises(te.MicroRuntimeError):
        te.run_micro(data, x[:2])
