"""Arm Ethos-U through Vela itself: the report against Vela's own CSV files, CPU fallbacks with their reasons, bad
input, static device shapes, the C package of a Vela file, the CLI and the DONNA measurer's cache."""

import csv
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflite_export as te
from keras_eff.cli import EXIT_BAD_INPUT, EXIT_EXPORT_FAILED, EXIT_OK, main
from keras_eff.donna import (
    BlockSpace,
    EthosUMeasurer,
    MeasurementCache,
    Scenario,
    SearchConfig,
    SearchSpace,
    int8_model,
    search,
)


def _int8(model, batch_size=1, seed=0):
    rep = np.random.default_rng(seed).random((32, *model.input_shape[1:]), dtype=np.float32)
    return te.to_tflite(model, rep, batch_size=batch_size)


def _kws_cnn(name="kws"):
    """A DS-CNN head as keyword spotters write it: average pooling, then Flatten, then Dense."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 1, activation="relu")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(inp, out, name=name)


def _gather_model():
    """A full-int8 model with a GATHER in the middle: Vela cannot place it on an Ethos-U55."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    y = keras.layers.Conv2D(8, 3, padding="same")(inp)
    y = keras.ops.take(y, np.array([0, 2, 4, 6, 1, 3, 5, 7]), axis=-1)
    return keras.Model(inp, keras.layers.Conv2D(4, 1)(y))


@pytest.fixture(scope="module")
def kws_file():
    return _int8(_kws_cnn())


@pytest.fixture(scope="module")
def gather_file():
    return _int8(_gather_model())


def _vela_csvs(data, tmp_path, target):
    """Vela's own CSV files for ``data``, from Vela's command line, independently of tflite_export."""
    src = tmp_path / "m.tflite"
    src.write_bytes(data)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ethosu.vela",
            str(src),
            "--output-dir",
            str(tmp_path / "vela"),
            "--accelerator-config",
            target,
            "--verbose-performance",
        ],
        check=True,
        capture_output=True,
    )
    with open(next((tmp_path / "vela").glob("m_summary_*.csv")), newline="") as f:
        summary = next(csv.DictReader(f))
    with open(tmp_path / "vela" / "m_per-layer.csv", newline="") as f:
        layers = list(csv.DictReader(f))
    return summary, layers


@pytest.mark.parametrize("target", ["ethos-u55-128", "ethos-u85-256"])
def test_report_equals_what_velas_own_csv_says(kws_file, tmp_path, target):
    result = te.compile_ethos_u(kws_file, target)
    r = result.report
    summary, layers = _vela_csvs(kws_file, tmp_path, target)
    assert r.cycles == int(float(summary["cycles_total"])) > 0
    assert r.inference_time_s == pytest.approx(float(summary["inference_time"]))
    assert r.sram_bytes == round(float(summary["sram_memory_used"]) * 1024) > 0
    assert r.macs == int(float(summary["nn_macs"])) > 0
    assert r.encoded_weight_bytes == int(float(summary["total_npu_encoded_weights"])) > 0
    assert [(x.target, x.cycles, x.macs, x.name) for x in r.layers] == [
        (x["Target"], int(x["Op Cycles"]), int(x["MAC Count"]), x["Name"]) for x in layers
    ]
    assert sum(x.cycles for x in r.layers) > 0
    # every op of the file is on the NPU, as Vela's CSV says
    assert {x["Target"] for x in layers} == {"NPU"} and not r.cpu_ops
    assert len(r.npu_ops) == len(te.read_graph(kws_file).ops)
    assert r.accelerator == target and r.vela_version == te.vela_version()
    assert r.system_config == summary["system_config"] and r.memory_mode == summary["memory_mode"]
    assert te.read_graph_flatbuffer(result.tflite).op_names() == ["ethos-u"]
    md, doc = r.to_markdown(), r.as_dict()
    assert f"{r.cycles:,}" in md and "| CONV_2D |" in md and doc["cpu_op_count"] == 0
    assert not r.warnings  # a static batch-1 file: nothing for Vela to fix


def test_an_op_vela_cannot_place_is_a_cpu_op_with_its_reason(gather_file, tmp_path):
    r = te.compile_ethos_u(gather_file, "ethos-u55-128").report
    assert [o.op for o in r.cpu_ops] == ["GATHER"]
    assert r.cpu_ops[0].reason == "Unsupported opType"
    assert [o.op for o in r.npu_ops] == ["CONV_2D", "CONV_2D"]
    _, layers = _vela_csvs(gather_file, tmp_path, "ethos-u55-128")
    assert [x["Name"] for x in layers if x["Target"] == "CPU"] == [r.cpu_ops[0].output]
    assert "GATHER" in str(r) and "Unsupported opType" in r.to_markdown()


def test_vela_file_package_registers_the_ethos_u_op_and_the_cpu_ops(gather_file):
    files = te.compile_ethos_u(gather_file, "ethos-u55-128").files("kws")
    assert sorted(files) == [
        "kws.c",
        "kws.h",
        "kws_ethos_u.json",
        "kws_ethos_u.md",
        "kws_op_resolver.h",
        "kws_vela.tflite",
    ]
    resolver = files["kws_op_resolver.h"]
    assert "resolver.AddEthosU()" in resolver and "resolver.AddGather()" in resolver
    assert "resolver.AddConv2D()" not in resolver  # the convolutions live inside the ethos-u op
    assert f"kws_data[{len(files['kws_vela.tflite'])}]" in files["kws.c"]
    assert "KWS_NUM_OPS 2" in files["kws.h"]


def test_float_and_int16_files_are_refused_with_what_to_do(tmp_path):
    model = _kws_cnn()
    with pytest.raises(te.EthosUError, match="Vela needs a full-int8 file.*float32.*to_tflite"):
        te.compile_ethos_u(te.to_tflite(model, quantize=False))
    # 16-bit activations, 8-bit weights: the converter's 16x8 mode
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.rand(1, 16, 16, 1).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    with pytest.raises(te.EthosUError, match="int16 tensor"):
        te.compile_ethos_u(conv.convert())


def test_unknown_names_list_the_valid_ones(kws_file):
    with pytest.raises(te.EthosUError, match="unknown Ethos-U accelerator 'ethos-u56'.*ethos-u55-128.*ethos-u85-2048"):
        te.compile_ethos_u(kws_file, "ethos-u56")
    with pytest.raises(te.EthosUError, match="unknown Vela system configuration 'Fast'.*Ethos_U55_High_End_Embedded"):
        te.compile_ethos_u(kws_file, system_config="Fast")
    with pytest.raises(te.EthosUError, match="unknown Vela memory mode 'Big'.*Shared_Sram"):
        te.compile_ethos_u(kws_file, memory_mode="Big")
    # the same check on its own, as the command line runs it before any work
    assert te.check_ethos_u_options("ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram").name == "vela.ini"
    with pytest.raises(te.EthosUError, match="unknown Vela memory mode 'Big'"):
        te.check_ethos_u_options("ethos-u65-256", memory_mode="Big")
    with pytest.raises(te.EthosUError, match="does not exist"):
        te.check_ethos_u_options("ethos-u65-256", config_file="/nonexistent/vela.ini")
    with pytest.raises(te.EthosUError, match="already compiled by Vela"):
        te.compile_ethos_u(te.compile_ethos_u(kws_file).tflite)


def _broken_config(tmp_path):
    """A Vela configuration whose system configuration Vela itself rejects (no clock, a bogus memory area)."""
    ini = tmp_path / "mine.ini"
    ini.write_text(
        "[System_Config.Mine]\ncore_clock=-5\naxi0_port=Nowhere\naxi1_port=OffChipFlash\n"
        "[Memory_Mode.MineMode]\nconst_mem_area=Axi1\narena_mem_area=Axi0\ncache_mem_area=Axi0\n"
    )
    return ini


def test_a_vela_failure_is_passed_on_and_nothing_is_written(kws_file, tmp_path, capsys):
    ini = _broken_config(tmp_path)
    with pytest.raises(te.EthosUError, match=r"Vela 5\.\d+\.\d+ failed.*\n(.|\n)*Nowhere"):
        te.compile_ethos_u(kws_file, system_config="Mine", memory_mode="MineMode", config_file=ini)
    # the command line: exit code 3, Vela's message, no file in the output folder
    model_path = tmp_path / "kws.keras"
    _kws_cnn().save(model_path)
    out = tmp_path / "out"
    rep = tmp_path / "rep.npy"
    np.save(rep, np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32))
    code = main(
        [
            "export",
            str(model_path),
            "-o",
            str(out),
            "--rep-data",
            str(rep),
            "--target",
            "ethos-u55-128",
            "--vela-config",
            str(ini),
            "--system-config",
            "Mine",
            "--memory-mode",
            "MineMode",
        ]
    )
    assert code == EXIT_EXPORT_FAILED
    assert "Nowhere" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_device_files_have_static_shapes_and_no_dynamic_batch_ops():
    model = _kws_cnn()
    dynamic = te.read_graph(_int8(model, batch_size=None)).op_names()
    static_file = _int8(model, batch_size=1)
    static = te.read_graph(static_file).op_names()
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= set(dynamic)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(static)
    assert static == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "AVERAGE_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    graph = te.read_graph(static_file)
    assert all(graph.tensors[i].shape[0] == 1 for op in graph.ops for i in op.outputs)
    assert "KWS_NUM_OPS 6" in te.to_c_source(static_file, "kws").header  # RESHAPE once, 6 distinct ops
    # the same outputs as the dynamic file
    x = np.random.default_rng(1).random((8, 16, 16, 1), dtype=np.float32)
    np.testing.assert_array_equal(
        te.TFLiteModel(static_file).predict(x), te.TFLiteModel(_int8(model, batch_size=None)).predict(x)
    )
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        te.to_tflite(model, quantize=False, batch_size=0)


def test_cli_export_and_report_for_an_ethos_u_target(tmp_path, capsys):
    model_path = tmp_path / "kws.keras"
    _kws_cnn().save(model_path)
    rep = tmp_path / "rep.npy"
    np.save(rep, np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32))
    out = tmp_path / "out"
    assert (
        main(["export", str(model_path), "-o", str(out), "--rep-data", str(rep), "--target", "ethos-u55-64"]) == EXIT_OK
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "kws.c",
        "kws.h",
        "kws.tflite",
        "kws_ethos_u.json",
        "kws_ethos_u.md",
        "kws_op_resolver.h",
        "kws_vela.tflite",
    ]
    assert te.read_graph((out / "kws.tflite").read_bytes()).tensors[0].shape[0] == 1
    assert "resolver.AddEthosU()" in (out / "kws_op_resolver.h").read_text()
    capsys.readouterr()
    assert main(["report", str(out / "kws.tflite"), "--target", "ethos-u55-64", "--json"]) == EXIT_OK
    import json

    doc = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "kws_ethos_u.json").read_text())
    assert doc["cycles"] == saved["cycles"] > 0 and doc["accelerator"] == "ethos-u55-64"
    # bad names: exit 1 before any work, listing the valid ones
    assert main(["report", str(out / "kws.tflite"), "--target", "ethos-u99"]) == EXIT_BAD_INPUT
    assert "ethos-u55-32, ethos-u55-64" in capsys.readouterr().err
    assert main(["report", str(out / "kws.tflite"), "--system-config", "X"]) == EXIT_BAD_INPUT
    assert "needs --target" in capsys.readouterr().err
    assert (
        main(
            ["export", str(model_path), "-o", str(tmp_path / "o2"), "--target", "ethos-u55-64", "--memory-mode", "Nope"]
        )
        == EXIT_BAD_INPUT
    )
    assert "Shared_Sram" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    # the microcontroller package is a device file too: batch 1, only the ops the model computes
    mcu = tmp_path / "mcu"
    assert main(["export", str(model_path), "-o", str(mcu), "--rep-data", str(rep)]) == EXIT_OK
    resolver = (mcu / "kws_op_resolver.h").read_text()
    assert "AddAveragePool2D" in resolver and "AddShape" not in resolver and "AddStridedSlice" not in resolver
    assert te.read_graph((mcu / "kws.tflite").read_bytes()).tensors[0].shape[0] == 1


def one_block_space():
    return SearchSpace(
        blocks=(BlockSpace(8, 2, kernels=(3, 5)),),
        input_shape=(16, 16, 1),
        stem_channels=4,
        head_channels=8,
        name="one_block",
    )


class _Accuracy:
    def predict(self, archs):
        return np.array([float(sum(c.kernel for c in a.choices)) for a in archs])


def test_ethos_u_measurer_in_a_search_and_its_cache(tmp_path):
    space = one_block_space()
    m = EthosUMeasurer("ethos-u55-128")
    metrics = m.measure(int8_model(space, space.reference()))
    assert metrics["latency_us"] > 0 and metrics["npu_cycles"] > 0 and metrics["npu_cpu_ops"] == 0
    assert metrics["flash_bytes"] > 0 and metrics["ram_bytes"] > 0
    assert m.cache_key()["vela"] == te.vela_version()
    with pytest.raises(ValueError, match="ethos-u55-32"):
        EthosUMeasurer("ethos-u77")
    scenario = Scenario("npu", [{"kind": "ethos_u", "accelerator": "ethos-u55-128"}], limits={"ram_bytes": 1e6})
    assert scenario.limits["npu_cpu_ops"] == 0.5  # every op on the NPU unless said otherwise
    assert Scenario.from_config(scenario.get_config()).limits == scenario.limits
    cache_path = tmp_path / "measurements.json"
    config = SearchConfig(pop_size=4, max_evals=8, seed=0)
    first = search(space, _Accuracy(), scenario, config, cache=MeasurementCache(cache_path), verbose=0)
    assert first.stats["measured"] > 0
    second = search(space, _Accuracy(), scenario, config, cache=MeasurementCache(cache_path), verbose=0)
    assert second.stats["measured"] == 0 and second.stats["evaluations"] == first.stats["evaluations"]
    assert [r["metrics"]["npu_cycles"] for r in second.front] == [r["metrics"]["npu_cycles"] for r in first.front]
