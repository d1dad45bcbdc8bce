"""End to end on the tiny space: reference -> BKD library -> finetuned architectures -> predictor, with its budget."""

import numpy as np
import pytest

from keras_eff.donna import (
    AccuracyPredictor,
    BKDConfig,
    BlockLibrary,
    DonnaConfig,
    FinetuneConfig,
    build_accuracy_model,
    tiny_space,
)


@pytest.mark.slow
def test_accuracy_model_end_to_end(fmnist, tmp_path, capsys):
    (x, y), (xe, ye) = fmnist
    cfg = DonnaConfig(
        reference_epochs=2,
        bkd=BKDConfig(steps=30, batch_size=64, calibration_samples=128, compile=False),
        bkd_samples=1500,
        val_samples=300,
        n_archs=4,
        finetune=FinetuneConfig(steps=15),
        finetune_samples=2000,
    )
    result = build_accuracy_model(tiny_space(), x[:3000], y[:3000], xe[:500], ye[:500], cfg, budget_s=180, verbose=0)
    out = capsys.readouterr().out
    assert "time budget" not in out  # verbose=0 prints nothing
    assert len(result.archs) == 4 and np.all((result.accuracies > 0.1) & (result.accuracies <= 1))
    assert result.cost_reference_epochs > 0 and result.seconds["total"] >= result.seconds["reference"]
    folder = result.save(tmp_path / "donna")
    predictor = AccuracyPredictor.load(folder / "predictor.json")
    np.testing.assert_allclose(predictor.predict(result.archs), result.predictor.predict(result.archs))
    library = BlockLibrary.load(folder / "library", space=tiny_space())
    assert library.build(result.archs[0]).count_params() > 0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="DonnaConfig.n_archs"):
        DonnaConfig(n_archs=1)
    with pytest.raises(ValueError, match="BKDConfig.steps"):
        BKDConfig(steps=0)
    with pytest.raises(ValueError, match="FinetuneConfig.learning_rate"):
        FinetuneConfig(learning_rate=0)
    with pytest.raises(ValueError, match="DonnaConfig.sampling"):
        DonnaConfig(sampling="stratified")
    with pytest.raises(ValueError, match="features"):
        DonnaConfig(features="losses+flops")
    cfg = DonnaConfig.quick()
    assert DonnaConfig.from_config(cfg.get_config()) == cfg
    assert cfg.alpha == "cv" and cfg.sampling == "balanced"


def _tiny_pipeline_config():
    from keras_eff.donna import builtin_config

    cfg = builtin_config("tiny")
    cfg["accuracy_model"] = {
        "reference_epochs": 1,
        "reference_batch_size": 64,
        "bkd": {"steps": 4, "batch_size": 32, "calibration_samples": 32, "compile": False},
        "bkd_samples": 200,
        "val_samples": 64,
        "n_archs": 3,
        "finetune": {"steps": 3, "batch_size": 32},
        "finetune_samples": 200,
    }
    cfg["seed"] = 3
    return cfg


@pytest.mark.slow
def test_pipeline_and_function_are_one_build(fmnist, tmp_path, capsys):
    """DonnaPipeline.build_accuracy_model runs build_accuracy_model over its folder: on the same data, config and
    seed both give the same reference, library, measured architectures and predictor; each resumes from the
    folder without running a stage again."""
    from keras_eff.donna import DonnaPipeline

    (x, y), (xe, ye) = fmnist
    data = ((x[:400], y[:400]), (xe[:200], ye[:200]))
    pipe = DonnaPipeline(_tiny_pipeline_config(), tmp_path / "run", data=data, verbose=0)
    a = pipe.build_accuracy_model()
    assert pipe.ran == ["reference", "library", "predictor"] and pipe.accuracy_model is a
    b = build_accuracy_model(pipe.space, *data[0], *data[1], pipe.config.donna, verbose=0)
    assert a.archs == b.archs and len(a.archs) == 3
    for wa, wb in zip(a.reference.get_weights(), b.reference.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    assert a.reference_accuracy == pytest.approx(b.reference_accuracy, abs=1e-6)
    for ta, tb in zip(a.library.loss_table(), b.library.loss_table()):
        np.testing.assert_allclose(ta, tb, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a.accuracies, b.accuracies, atol=0.011)  # 200 eval images: one image is 0.005
    others = pipe.space.sample(6, seed=11)
    np.testing.assert_allclose(a.predictor.predict(others), b.predictor.predict(others), atol=0.02)

    # resumed: the pipeline reads every stage back, with what it measured
    again = DonnaPipeline(_tiny_pipeline_config(), tmp_path / "run", data=data, verbose=0)
    c = again.build_accuracy_model()
    assert again.ran == [] and again.skipped == ["reference", "library", "predictor"]
    assert c.archs == a.archs and c.reference_accuracy == a.reference_accuracy
    np.testing.assert_array_equal(c.accuracies, a.accuracies)
    np.testing.assert_allclose(c.predictor.predict(others), a.predictor.predict(others), rtol=1e-12)
    # the function resumes from the same folder too
    stages = []
    d = build_accuracy_model(
        pipe.space,
        *data[0],
        *data[1],
        pipe.config.donna,
        folder=tmp_path / "run",
        verbose=0,
        stage=lambda name, done, fn: stages.append((name, done)) or (None if done else fn()),
    )
    assert stages == [("reference", True), ("library", True), ("predictor", True)]
    assert d.archs == a.archs and d.reference_accuracy == a.reference_accuracy
    np.testing.assert_array_equal(d.library.loss_table()[0], a.library.loss_table()[0])


def test_split_data_is_shared_and_checked():
    from keras_eff.donna.pipeline import split_data

    cfg = DonnaConfig(bkd_samples=50, val_samples=20, seed=4)
    x, y = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1), np.arange(100)
    x_fit, y_fit, x_val = split_data(x, y, cfg)
    assert len(x_fit) == 80 and len(x_val) == 20
    assert set(x_fit.ravel()).isdisjoint(x_val.ravel()) and np.array_equal(x_fit.ravel(), y_fit)
    again = split_data(x, y, cfg)
    assert np.array_equal(again[0], x_fit) and np.array_equal(again[2], x_val)
    with pytest.raises(ValueError, match=r"69 images, but accuracy_model.bkd_samples \+ val_samples = 50 \+ 20"):
        split_data(x[:69], y[:69], cfg)


def test_pipeline_config_fields_are_its_whole_state():
    import dataclasses

    from keras_eff.donna import PipelineConfig

    cfg = PipelineConfig.load("tiny")
    names = {f.name for f in dataclasses.fields(cfg)}
    assert set(vars(cfg)) == names
    derived = {f.name for f in dataclasses.fields(cfg) if not f.init}
    assert derived == {"space_obj", "donna", "search_config", "scenario_objs", "top_k", "distill"}
    assert isinstance(cfg.donna, DonnaConfig) and cfg.top_k == 2
    assert PipelineConfig.load("tiny") == cfg
