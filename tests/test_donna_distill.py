"""Soft distillation: the loss against its formula, its serialization, and a distilled architecture from a library."""

import numpy as np
import pytest

from keras_eff.donna import DistillationLoss, DistillConfig
from keras_eff.donna.distill import pack_targets


def _reference_loss(labels, teacher, student, t, alpha):
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ce = -log_softmax(student)[np.arange(len(labels)), labels]
    lpt, lps = log_softmax(teacher / t), log_softmax(student / t)
    kl = (np.exp(lpt) * (lpt - lps)).sum(axis=1) * t * t
    return float(np.mean(alpha * kl + (1 - alpha) * ce))


def test_distillation_loss_matches_its_formula(rng):
    labels = rng.integers(0, 10, 32)
    teacher, student = rng.normal(size=(32, 10)) * 3, rng.normal(size=(32, 10)) * 3
    y = pack_targets(labels, teacher)
    for t, alpha in ((1.0, 0.0), (4.0, 0.5), (2.0, 1.0)):
        got = float(DistillationLoss(t, alpha)(y, student.astype(np.float32)))
        assert got == pytest.approx(_reference_loss(labels, teacher, student, t, alpha), rel=1e-4)
    # pure distillation towards itself costs nothing
    assert float(
        DistillationLoss(3.0, 1.0)(pack_targets(labels, teacher), teacher.astype(np.float32))
    ) == pytest.approx(0.0, abs=1e-5)
    cfg = DistillationLoss(2.5, 0.3).get_config()
    again = DistillationLoss.from_config(cfg)
    assert (again.temperature, again.alpha) == (2.5, 0.3)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(4.0, 1.5)
    with pytest.raises(ValueError, match="DistillConfig.epochs"):
        DistillConfig(epochs=0)
    assert DistillConfig.from_config(DistillConfig(epochs=2).get_config()) == DistillConfig(epochs=2)


def test_model_compiled_with_the_loss_saves_and_loads_without_custom_objects(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=DistillationLoss(3.0, 0.25))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = pack_targets(np.arange(16) % 3, np.random.default_rng(1).normal(size=(16, 3)))
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, DistillationLoss) and loaded.loss.temperature == 3.0
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
