"""Pruning schedules and per-layer distributions: pure arithmetic, no training."""

import math

import keras
import numpy as np
import pytest

from keras_eff.pruning import ConstantSparsity, PolynomialDecay
from keras_eff.pruning.distribution import log_proportional, resolve, weighted_sparsity


def test_polynomial_decay_values_at_chosen_steps():
    s = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=120, power=3, frequency=25)
    assert s.sparsity_at(0) == pytest.approx(0.1)
    assert s.sparsity_at(10) == pytest.approx(0.1)
    assert s.sparsity_at(65) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5**3)
    assert s.sparsity_at(120) == pytest.approx(0.8)
    assert s.sparsity_at(10_000) == pytest.approx(0.8)
    updates = [t for t in range(200) if s.should_update(t)]
    # the frequency grid from begin_step, and end_step although it is off the grid (10 + 4·25 = 110 < 120 < 135)
    assert updates == [10, 35, 60, 85, 110, 120]
    assert s(120) == (True, pytest.approx(0.8))


def test_end_step_update_fixes_the_tf_mot_frequency_pitfall():
    # frequency 100 and end_step 64 (one epoch of 64 steps): TF-MOT never updated after step 0
    s = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=64, frequency=100)
    assert [t for t in range(300) if s.should_update(t)] == [0, 64]
    assert s.sparsity_at(64) == pytest.approx(0.8)


def test_constant_sparsity():
    s = ConstantSparsity(0.6, begin_step=5, frequency=10)
    assert s.sparsity_at(4) == 0 and s.sparsity_at(5) == pytest.approx(0.6) and s.sparsity_at(999) == 0.6
    assert [t for t in range(40) if s.should_update(t)] == [5, 15, 25, 35]
    ended = ConstantSparsity(0.6, begin_step=0, frequency=10, end_step=23)
    assert [t for t in range(60) if ended.should_update(t)] == [0, 10, 20, 23]


@pytest.mark.parametrize(
    "schedule", [PolynomialDecay(0.0, 0.7, 3, 50, power=2, frequency=7), ConstantSparsity(0.3, 2, 9, end_step=40)]
)
def test_schedules_serialize(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    again = keras.saving.deserialize_keras_object(config)
    assert again == schedule and again is not schedule
    assert all(again.sparsity_at(t) == schedule.sparsity_at(t) for t in range(60))


def test_with_target_scales_the_schedule():
    s = PolynomialDecay(0.2, 0.8, 0, 100).with_target(0.4)
    assert s.final_sparsity == 0.4 and s.initial_sparsity == pytest.approx(0.1) and s.end_step == 100


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity must lie in \\[0, 1\\)"),
        (lambda: PolynomialDecay(0.0, -0.1, 0, 10), "final_sparsity"),
        (lambda: PolynomialDecay(-0.2, 0.5, 0, 10), "initial_sparsity"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 10), "end_step \\(10\\) must be greater than begin_step \\(10\\)"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 3), "end_step"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0), "frequency must be >= 1"),
        (lambda: PolynomialDecay(0.6, 0.5, 0, 10), "must not exceed final_sparsity"),
        (lambda: ConstantSparsity(1.5), "target_sparsity must lie in \\[0, 1\\)"),
        (lambda: ConstantSparsity(float("nan")), "target_sparsity"),
    ],
)
def test_schedule_bad_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_log_distribution_hits_the_target_exactly(rng):
    sizes = {f"l{i}": int(n) for i, n in enumerate(rng.integers(200, 200_000, size=8))}
    for target in (0.3, 0.5, 0.8, 0.9):
        s = log_proportional(sizes, target)
        assert weighted_sparsity(s, sizes) == pytest.approx(target, abs=1e-12)
        assert all(0 <= v <= 0.98 for v in s.values())
        # bigger layers are pruned harder, in proportion to log n
        ratios = {name: s[name] / math.log(n) for name, n in sizes.items()}
        assert max(ratios.values()) == pytest.approx(min(ratios.values()))


def test_log_distribution_caps_and_redistributes():
    sizes = {"a": 100, "b": 100, "c": 100, "big": 10_000}
    s = log_proportional(sizes, 0.97, max_sparsity=0.98)
    assert s["big"] == pytest.approx(0.98)  # would be 0.984 uncapped
    assert weighted_sparsity(s, sizes) == pytest.approx(0.97, abs=1e-12)
    assert s["a"] == pytest.approx(s["b"]) and s["a"] > 0.6  # the others took what the cap removed
    with pytest.raises(ValueError, match="cannot be reached"):
        log_proportional({"a": 1, "big": 100}, 0.97, max_sparsity=0.975)  # log 1 = 0: "a" can take no zeros


def test_uniform_dict_and_unknown_distribution():
    sizes = {"a": 10, "b": 1000}
    assert resolve("uniform", sizes, 0.5) == {"a": 0.5, "b": 0.5}
    assert resolve({"a": 0.1}, sizes, 0.5) == {"a": 0.1}
    with pytest.raises(ValueError, match="unknown distribution 'cubic'.*'uniform', 'log'"):
        resolve("cubic", sizes, 0.5)
    assert np.isclose(weighted_sparsity(resolve("log", sizes, 0.5), sizes), 0.5)
