"""`keras-eff demo` end to end on a small slice: what `make demo` runs, turned down in size."""

import json

import keras
import pytest

from keras_eff import cli


@pytest.mark.slow
def test_demo_writes_its_artifacts_and_the_int8_files_agree(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--qat-epochs", "1", "--train-samples", "1000", "--test-samples", "200"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    for name in ("float.keras", "qat.keras", "float.tflite", "int8_ptq.tflite", "int8_qat.tflite", "results.md"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "mcu").iterdir())
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"float", "int8 PTQ", "int8 QAT"}
    qat = rows["int8 QAT"]
    assert qat["argmax agree %"] >= 99.0 and qat["within 1 LSB %"] >= 99.0  # simulation equals deployment
    assert abs(qat["keras acc %"] - qat["tflite acc %"]) <= 1.0
    assert qat["size KB"] < rows["float"]["size KB"] / 2
    keras.saving.load_model(out / "qat.keras")  # no custom_objects
