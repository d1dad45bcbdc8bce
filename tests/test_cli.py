"""The `keras-eff` command line: export, report and verify round trips, exit codes, no partial output."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from micro_models import gelu_model, random_images, tiny_cnn, two_input_model

import tflite_export as te
from keras_eff import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny .keras model, representative and check data, and broken inputs of every kind."""
    d = tmp_path_factory.mktemp("cli_inputs")
    model = tiny_cnn("small_cnn")
    model.save(d / "tiny.keras")
    gelu_model().save(d / "gelu.keras")
    np.savez(d / "rep.npz", x=random_images(48, seed=1))
    np.save(d / "check.npy", random_images(16, seed=2))
    np.save(d / "pickled.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    np.save(d / "wrong_shape.npy", random_images(8, shape=(32, 32, 3)))
    (d / "garbage.keras").write_bytes(b"this is not a zip archive")
    whole = (d / "tiny.keras").read_bytes()
    (d / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    return d


@pytest.fixture(scope="module")
def exported(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_export") / "pkg"
    rc = cli.main(
        [
            "export",
            str(files / "tiny.keras"),
            "-o",
            str(out),
            "--name",
            "tiny",
            "--rep-data",
            str(files / "rep.npz"),
            "--data",
            str(files / "check.npy"),
            "--samples",
            "16",
            "--onnx",
        ]
    )
    assert rc == 0
    return out


def _c_array_bytes(c_text: str) -> bytes:
    body = c_text.split("_data[", 1)[1].split("{", 1)[1].split("};", 1)[0]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))


def test_export_round_trip(files, exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["tiny.c", "tiny.h", "tiny.onnx", "tiny.tflite", "tiny_micro.json", "tiny_op_resolver.h"]
    int8 = (exported / "tiny.tflite").read_bytes()
    te.check_int8(int8)
    assert _c_array_bytes((exported / "tiny.c").read_text()) == int8
    meta = json.loads((exported / "tiny_micro.json").read_text())
    assert meta["micro_check"]["n"] == 16 and meta["micro_check"]["max_lsb_diff"] <= 1
    assert te.try_arena(int8, meta["arena"]["host_min_bytes"])
    import keras

    model = keras.saving.load_model(files / "tiny.keras")
    x = random_images(16, seed=2)
    cmp = te.compare_onnx(model, (exported / "tiny.onnx").read_bytes(), x)
    assert cmp.max_rel_diff <= 1e-5
    assert te.compare(model, int8, x).within_1_lsb >= 0.9


def test_export_never_overwrites_without_force(files, exported, capsys):
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    args = [
        "export",
        str(files / "tiny.keras"),
        "-o",
        str(exported),
        "--name",
        "tiny",
        "--rep-data",
        str(files / "rep.npz"),
        "--no-micro",
    ]
    assert cli.main(args) == cli.EXIT_BAD_INPUT
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    assert cli.main(args + ["--force"]) == cli.EXIT_OK
    assert sorted(p.name for p in exported.iterdir()) == sorted(before)  # only tiny.tflite was rewritten


def test_report_round_trip(files, exported, tmp_path, capsys):
    stem = tmp_path / "reports" / "tiny"
    rc = cli.main(
        [
            "report",
            str(exported / "tiny.tflite"),
            "-o",
            str(stem),
            "--data",
            str(files / "check.npy"),
            "--samples",
            "8",
            "--latency-runs",
            "10",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "reports" / "tiny.json").read_text())
    assert data["summary"]["file_bytes"] == (exported / "tiny.tflite").stat().st_size
    assert data["summary"]["macs"] == te.count_macs(exported / "tiny.tflite").total_macs
    assert data["micro_check"]["n"] == 8 and "int8" in data["latency"]
    assert (tmp_path / "reports" / "tiny.md").read_text().strip() == printed.strip()


def test_report_of_keras_file_compares_int8_and_float_latency(files, tmp_path, capsys):
    rc = cli.main(
        [
            "report",
            str(files / "tiny.keras"),
            "--rep-data",
            str(files / "rep.npz"),
            "--rep-samples",
            "16",
            "--data",
            str(files / "check.npy"),
            "--samples",
            "4",
            "--latency-runs",
            "10",
            "--json",
        ]
    )
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["latency"]) == {"int8", "float"} and data["warnings"] == []


def test_verify(files, exported, tmp_path, capsys):
    out = tmp_path / "verify.json"
    rc = cli.main(["verify", str(exported / "tiny.tflite"), "--data", str(files / "check.npy"), "-o", str(out)])
    assert rc == cli.EXIT_OK
    result = json.loads(out.read_text())
    assert result["passed"] and result["n"] == 16 and result["max_lsb_diff"] <= 1
    assert "bit-exact" in capsys.readouterr().out


def test_verify_fails_with_exit_2_when_tflite_micro_cannot_run_the_model(files, tmp_path, capsys):
    path = tmp_path / "gelu.tflite"
    path.write_bytes(te.to_tflite(gelu_model(), quantize=False))
    np.save(tmp_path / "features.npy", np.random.default_rng(0).random((4, 8), dtype=np.float32))
    rc = cli.main(["verify", str(path), "--data", str(tmp_path / "features.npy")])
    assert rc == cli.EXIT_VERIFY_FAILED
    assert "GELU" in capsys.readouterr().err


def test_export_fails_with_exit_3_and_no_output_for_an_unsupported_op(files, tmp_path, capsys):
    np.save(tmp_path / "features.npy", np.random.default_rng(0).random((16, 8), dtype=np.float32))
    out = tmp_path / "gelu_out"
    rc = cli.main(["export", str(files / "gelu.keras"), "-o", str(out), "--rep-data", str(tmp_path / "features.npy")])
    assert rc == cli.EXIT_EXPORT_FAILED
    assert "GELU" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("garbage_keras", "not a valid .keras file"),
        ("truncated_keras", "not a valid .keras file"),
        ("missing_keras", "does not exist"),
        ("pickled_npy", "never unpickles"),
        ("wrong_shape_npy", r"has shape \(8, 32, 32, 3\), but the model expects \(n, 28, 28, 1\)"),
    ],
)
def test_export_bad_inputs(files, tmp_path, capsys, case, expected):
    model, rep = files / "tiny.keras", files / "rep.npz"
    if case.endswith("keras"):
        model = (
            files
            / {
                "garbage_keras": "garbage.keras",
                "truncated_keras": "truncated.keras",
                "missing_keras": "nowhere.keras",
            }[case]
        )
    else:
        rep = files / {"pickled_npy": "pickled.npy", "wrong_shape_npy": "wrong_shape.npy"}[case]
    out = tmp_path / "out"
    rc = cli.main(["export", str(model), "-o", str(out), "--rep-data", str(rep)])
    assert rc == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("command", ["verify", "report"])
def test_truncated_tflite_is_refused(exported, tmp_path, capsys, command):
    data = (exported / "tiny.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 3])
    out = tmp_path / "result"
    rc = cli.main([command, str(path), "-o", str(out), "--samples", "2"])
    assert rc == cli.EXIT_BAD_INPUT
    assert "corrupt or truncated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [path]


def test_missing_tflite_and_data_files(exported, tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "none.tflite")]) == cli.EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["verify", str(exported / "tiny.tflite"), "--data", str(tmp_path / "none.npy")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_usage_errors_exit_1(capsys):
    assert cli.main([]) == cli.EXIT_BAD_INPUT
    assert cli.main(["export"]) == cli.EXIT_BAD_INPUT
    assert cli.main(["verify", "m.tflite", "--samples", "0"]) == cli.EXIT_BAD_INPUT
    assert "positive integer" in capsys.readouterr().err


def test_help_documents_exit_codes():
    for command in ("export", "report", "verify"):
        done = subprocess.run(
            [sys.executable, "-m", "keras_eff.cli", command, "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "exit codes:" in done.stdout and "verification failed" in done.stdout
        assert "ranges were never set" in done.stdout
        assert ("--allow-uncalibrated" in done.stdout) == (command != "verify")


def test_export_refuses_a_quantized_model_whose_ranges_were_never_set(tmp_path, capsys):
    import keras_eff as ke

    fresh = ke.quantize_model(tiny_cnn("small_cnn"))
    fresh.save(tmp_path / "fresh_qat.keras")
    out = tmp_path / "refused"
    rc = cli.main(["export", str(tmp_path / "fresh_qat.keras"), "-o", str(out), "--no-micro"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_EXPORT_FAILED == 3
    assert "activation ranges were never set" in err and "first in layer 'image_input_range'" in err
    assert "keras_eff.calibrate(model, x)" in err and "--allow-uncalibrated" in err
    assert not out.exists()
    # the escape hatch, and the same model calibrated, saved and exported
    assert (
        cli.main(["export", str(tmp_path / "fresh_qat.keras"), "-o", str(out), "--no-micro", "--allow-uncalibrated"])
        == cli.EXIT_OK
    )
    ke.calibrate(fresh, random_images(64, seed=3), progress=False)
    fresh.save(tmp_path / "calibrated_qat.keras")
    out = tmp_path / "calibrated"
    assert cli.main(["export", str(tmp_path / "calibrated_qat.keras"), "-o", str(out), "--no-micro"]) == cli.EXIT_OK
    assert te.find_float_islands((out / "calibrated_qat.tflite").read_bytes()) == []


def test_export_report_and_verify_a_model_with_two_inputs(tmp_path, capsys):
    """Several inputs: --rep-data and --data are .npz files with one array per input, keyed by the input names (the
    file lists the inputs in another order than the model); the calibration, the TFLite Micro check and the ONNX
    comparison each get every array at its input."""
    two_input_model().save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)

    def samples(n):
        return {
            "zeta_image": rng.random((n, 8, 8, 1), np.float32),
            "alpha_features": 10 * rng.random((n, 5), np.float32),
        }

    np.savez(tmp_path / "rep.npz", **samples(64))
    np.savez(tmp_path / "check.npz", **samples(16))
    out = tmp_path / "pkg"
    argv = ["export", str(tmp_path / "two.keras"), "-o", str(out), "--rep-data", str(tmp_path / "rep.npz")]
    assert cli.main(argv + ["--data", str(tmp_path / "check.npz"), "--samples", "16", "--onnx"]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "bit-exact" in printed and "argmax agreement 100.00%" in printed, printed
    tfl = te.TFLiteModel(out / "two.tflite")
    assert set(tfl.input_names) == {"zeta_image", "alpha_features"}
    scales = {n: d["quantization"][0] for n, d in zip(tfl.input_names, tfl.inputs)}  # each calibrated on its array
    assert scales == {
        "zeta_image": pytest.approx(1 / 255, rel=0.05),
        "alpha_features": pytest.approx(10 / 255, rel=0.05),
    }
    assert cli.main(["verify", str(out / "two.tflite"), "--data", str(tmp_path / "check.npz")]) == cli.EXIT_OK
    assert cli.main(["report", str(out / "two.tflite"), "--data", str(tmp_path / "check.npz")]) == cli.EXIT_OK
    capsys.readouterr()

    np.savez(tmp_path / "one_missing.npz", zeta_image=rng.random((8, 8, 8, 1), np.float32))
    export = ["export", str(tmp_path / "two.keras"), "-o", str(tmp_path / "x"), "--no-micro"]
    assert cli.main(export + ["--rep-data", str(tmp_path / "one_missing.npz")]) == cli.EXIT_BAD_INPUT
    assert "missing: alpha_features" in capsys.readouterr().err
    assert cli.main(export) == cli.EXIT_BAD_INPUT  # no --rep-data, and the built-in images fit neither input
    err = capsys.readouterr().err
    assert "--rep-data" in err and "'zeta_image': x0, 'alpha_features': x1" in err, err
    assert not (tmp_path / "x").exists()
