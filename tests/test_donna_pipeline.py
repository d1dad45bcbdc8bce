"""End to end on the tiny space: reference -> BKD library -> finetuned architectures -> predictor, with its budget."""

import numpy as np
import pytest

from keras_eff.donna import (AccuracyPredictor, BKDConfig, BlockLibrary, DonnaConfig, FinetuneConfig,
                             build_accuracy_model, tiny_space)


@pytest.mark.slow
def test_accuracy_model_end_to_end(fmnist, tmp_path, capsys):
    (x, y), (xe, ye) = fmnist
    cfg = DonnaConfig(reference_epochs=2, bkd=BKDConfig(steps=30, batch_size=64, calibration_samples=128,
                                                         compile=False),
                      bkd_samples=1500, val_samples=300, n_archs=4, finetune=FinetuneConfig(steps=15),
                      finetune_samples=2000)
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
