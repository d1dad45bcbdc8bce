"""`keras-eff donna` end to end on a tiny config sized down hard: run, resume without redoing finished stages, a new
scenario searched with the same accuracy model."""

import json
import shutil

import pytest
import yaml

from keras_eff import cli
from keras_eff.donna import DonnaPipeline, PipelineConfig, SearchResult, builtin_config


def small_config():
    cfg = builtin_config("tiny")
    cfg["data"] = {"n_train": 1600, "n_test": 300}
    cfg["accuracy_model"] = {
        "reference_epochs": 1,
        "bkd": {"steps": 15, "batch_size": 64, "calibration_samples": 64, "compile": False},
        "bkd_samples": 600,
        "val_samples": 200,
        "n_archs": 3,
        "finetune": {"steps": 6},
        "finetune_samples": 600,
    }
    cfg["search"] = {"pop_size": 4, "max_evals": 8, "timeout_s": 60.0}
    cfg["scenarios"][0]["measurers"] = [{"kind": "litert", "runs": 10, "warmup": 2, "rounds": 1}]
    cfg["finetune"] = {"top_k": 1, "samples": 500, "distill": {"epochs": 1}}
    return cfg


def test_config_files_and_errors(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    assert cli.main(["donna", "config", "tiny", "-o", str(path)]) == 0
    assert yaml.safe_load(path.read_text()) == builtin_config("tiny")
    assert PipelineConfig.load(str(path)).get_config() == PipelineConfig.load("tiny").get_config()
    assert cli.main(["donna", "config", "tiny", "-o", str(path)]) == cli.EXIT_BAD_INPUT  # exists, no --force
    assert (
        cli.main(["donna", "run", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
        == cli.EXIT_BAD_INPUT
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**builtin_config("tiny"), "scenarios": [{"name": "x", "objective": "joules"}]}))
    assert cli.main(["donna", "run", "--config", str(bad), "--out", str(tmp_path / "o")]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "does not exist" in err and "objective 'joules'" in err
    assert cli.main(["donna", "search", "--out", str(tmp_path / "nothing")]) == cli.EXIT_BAD_INPUT
    assert cli.main(["donna"]) == cli.EXIT_BAD_INPUT  # no action: help on stderr
    assert cli.main(["donna", "search", "--out", "x", "--input-size", "0x3"]) == cli.EXIT_BAD_INPUT


@pytest.mark.slow
def test_donna_cli_end_to_end_resumes_and_searches_a_new_scenario(tmp_path, capsys):
    cfg_path, out = tmp_path / "small.json", tmp_path / "run"
    cfg_path.write_text(json.dumps(small_config()))
    assert cli.main(["donna", "run", "--config", str(cfg_path), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    for f in (
        "reference.keras",
        "library/library.json",
        "predictor.json",
        "measurements.json",
        "search/litert_1thread/pareto.json",
        "search/litert_1thread/pareto.png",
        "finetune/litert_1thread/results.json",
        "finetune/litert_1thread/model_0.keras",
        "summary.md",
    ):
        assert (out / f).is_file(), f
    result = SearchResult.load(out / "search/litert_1thread/pareto.json")
    assert result.front and all(r["metrics"]["latency_us"] > 0 for r in result.front)
    models = json.loads((out / "finetune/litert_1thread/results.json").read_text())["models"]
    assert len(models) == 1 and 0.0 < models[0]["accuracy"] <= 1.0
    assert "| litert_1thread |" in first

    import keras

    model = keras.saving.load_model(out / "finetune/litert_1thread/model_0.keras")  # no custom objects needed
    assert model.output_shape == (None, 10)

    # resumed: nothing is redone
    again = DonnaPipeline(str(cfg_path), out, verbose=0).run()
    assert again.ran == [] and len(again.skipped) == 5
    # a lost front is searched again from the cached measurements; the finetuned model for the same choice is kept
    (out / "search/litert_1thread/pareto.json").unlink()
    redo = DonnaPipeline(str(cfg_path), out, verbose=0).run()
    assert redo.ran == ["search:litert_1thread"]
    assert SearchResult.load(out / "search/litert_1thread/pareto.json").stats["measured"] == 0

    # another scenario, same accuracy model: only its search runs
    capsys.readouterr()
    assert cli.main(["donna", "search", "--out", str(out), "--threads", "2", "--max-evals", "4", "--no-finetune"]) == 0
    log = capsys.readouterr().out
    assert "[donna] search:litert_2t ..." in log and "reference ..." not in log and "library ..." not in log
    second = SearchResult.load(out / "search/litert_2t/pareto.json")
    assert second.front and second.scenario["measurers"][0]["num_threads"] == 2
    names = [s["name"] for s in json.loads((out / "config.json").read_text())["scenarios"]]
    assert names == ["litert_1thread", "litert_2t"]
    shutil.rmtree(out / "library")
    with pytest.raises(FileNotFoundError, match="library.json is missing"):
        DonnaPipeline(str(cfg_path), out, verbose=0).library()
