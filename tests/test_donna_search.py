"""DONNA step C: NSGA-II over a small space with a known cost and accuracy, checked against brute force; limits;
candidates whose measurer crashes or hangs fail without stopping the search."""

import itertools
import json
import math
import os
import time

import numpy as np
import pytest

from keras_eff.donna import (
    BlockSpace,
    Guard,
    MeasurementCache,
    Measurer,
    Scenario,
    SearchConfig,
    SearchResult,
    SearchSpace,
    non_dominated,
    search,
)
from keras_eff.donna.guard import MeasureCrash, MeasureTimeout


def small_space():
    """2 blocks x 8 choices = 64 architectures: small enough to enumerate."""
    common = dict(cells=("dw_ib", "fused_ib"), kernels=(3, 5), expansions=(2, 3))
    return SearchSpace(
        blocks=(BlockSpace(8, 2, **common), BlockSpace(12, 2, **common)),
        stem_channels=8,
        head_channels=16,
        name="small",
    )


def cost_of(arch):
    return float(
        sum(
            c.kernel**2 * c.expansion * (3 if c.cell == "fused_ib" else 1) * (i + 1) for i, c in enumerate(arch.choices)
        )
    )


def acc_of(arch):
    # more cost buys accuracy, but not in the same order (fused cells are worth less than they cost)
    return float(
        sum(
            (0.02 * c.kernel + 0.05 * c.expansion + 0.03 * (c.cell == "fused_ib")) / (i + 1)
            for i, c in enumerate(arch.choices)
        )
    )


class ArchCost(Measurer):
    """A measurer that reads the architecture (no int8 file): a known latency and flash size."""

    kind = "arch_cost"
    metrics = ("latency_us", "flash_bytes")
    needs_model = False

    def __init__(self):
        self.calls = 0

    def measure(self, model_bytes):
        raise AssertionError("not used")

    def measure_architecture(self, space, arch):
        self.calls += 1
        return {"latency_us": cost_of(arch), "flash_bytes": 100 * cost_of(arch) ** 0.5}


class Broken(ArchCost):
    """Raises on a fused first block with kernel 5, hangs on a fused first block with kernel 3 and expansion 3."""

    kind = "broken"

    def measure_architecture(self, space, arch):
        c = arch.choices[0]
        if c.cell == "fused_ib" and c.kernel == 5:
            raise RuntimeError("device disconnected")
        if c.cell == "fused_ib" and c.expansion == 3:
            time.sleep(3)
        return super().measure_architecture(space, arch)


class Predictor:
    def __init__(self):
        self.calls = 0

    def predict(self, archs):
        self.calls += len(archs)
        return np.array([acc_of(a) for a in archs])


def all_archs(space):
    from keras_eff.donna import Architecture

    return [Architecture(t) for t in itertools.product(*[space.block_choices(i) for i in range(len(space.blocks))])]


def dominates(a, b):
    """a, b: (accuracy, cost). a dominates b: at least as good in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def points(records):
    return [(r["predicted_accuracy"], r["metrics"]["latency_us"]) for r in records]


def true_front(archs, feasible=lambda a: True):
    pts = [(acc_of(a), cost_of(a)) for a in archs if feasible(a)]
    return sorted({p for p in pts if not any(dominates(q, p) for q in pts)})


def test_front_is_non_dominated_and_matches_brute_force(tmp_path):
    space = small_space()
    measurer = ArchCost()
    result = search(
        space, Predictor(), Scenario("arch", [measurer]), SearchConfig(pop_size=16, max_evals=400), verbose=0
    )
    front, evaluated = points(result.front), points(result.evaluated)
    assert len(result.evaluated) == len({r["arch"] for r in result.evaluated})  # each architecture once
    assert measurer.calls == len(result.evaluated)
    # every front point is non-dominated among everything evaluated, and every other point is dominated by one
    for p in front:
        assert not any(dominates(q, p) for q in evaluated)
    for r in result.evaluated:
        if not r["on_front"]:
            assert any(dominates(f, (r["predicted_accuracy"], r["metrics"]["latency_us"])) for f in front)
    # on a 64-architecture space the search finds the exact front of the whole space
    assert sorted(set(front)) == true_front(all_archs(space))
    assert result.reference["arch"] == str(space.reference())
    # pymoo's sorting agrees with the brute force
    F = np.array([[-a, c] for a, c in evaluated])
    assert {evaluated[i] for i in non_dominated(F)} == set(front)
    # saved as JSON, loaded back, plotted
    loaded = SearchResult.load(result.save(tmp_path / "pareto.json"))
    assert loaded.front == json.loads(json.dumps(result.to_dict()))["front"]
    assert result.plot(tmp_path / "pareto.png").stat().st_size > 5000


def test_limits_are_respected_and_evaluations_capped():
    space = small_space()
    limit_us, limit_flash = 120.0, 1000.0
    scenario = Scenario("limited", [ArchCost()], limits={"latency_us": limit_us, "flash_bytes": limit_flash})
    result = search(space, Predictor(), scenario, SearchConfig(pop_size=8, max_evals=24), verbose=0)
    assert len(result.evaluated) <= 24 + 8  # the cap stops at the end of a generation
    assert result.front and all(
        r["metrics"]["latency_us"] <= limit_us and r["metrics"]["flash_bytes"] <= limit_flash for r in result.front
    )
    over = [r for r in result.evaluated if not r["feasible"]]
    assert over and all(
        r["metrics"]["latency_us"] > limit_us or r["metrics"]["flash_bytes"] > limit_flash for r in over
    )
    assert not result.reference["feasible"]  # the largest architecture is over the limit, and not on the front
    assert all(not r["on_front"] for r in over)
    with pytest.raises(ValueError, match="no measurer gives it"):
        Scenario("bad", [ArchCost()], limits={"ram_bytes": 1000})
    with pytest.raises(ValueError, match="unknown metric"):
        Scenario("bad", [ArchCost()], limits={"speed": 1})


def test_broken_measurer_fails_candidates_and_the_search_goes_on(tmp_path):
    space = small_space()
    cache = MeasurementCache(tmp_path / "measurements.json")
    cfg = SearchConfig(pop_size=16, max_evals=48, timeout_s=0.5)
    result = search(space, Predictor(), Scenario("broken", [Broken()]), cfg, cache=cache, verbose=0)
    failed = {r["arch"]: r["error"] for r in result.failed}
    crashed = [e for a, e in failed.items() if a.startswith("fused_ib-k5")]
    hung = [e for a, e in failed.items() if a.startswith("fused_ib-k3-e3")]
    assert crashed and all("device disconnected" in e for e in crashed)
    assert hung and all("MeasureTimeout" in e for e in hung)
    assert len(failed) == len(crashed) + len(hung)
    ok = [r for r in result.evaluated if r["ok"]]
    assert len(ok) > len(failed) and result.front  # it went on and found a front among the rest
    assert not any(r["arch"] in failed for r in result.front)
    # failures are cached with the rest: searching again measures nothing new
    again = Broken()
    before = time.perf_counter()
    second = search(
        space,
        Predictor(),
        Scenario("broken", [again]),
        cfg,
        cache=MeasurementCache(tmp_path / "measurements.json"),
        verbose=0,
    )
    first_archs = {r["arch"] for r in result.evaluated}
    assert again.calls == len({r["arch"] for r in second.evaluated} - first_archs)
    assert {r["arch"] for r in second.failed} == set(failed) & {r["arch"] for r in second.evaluated}
    assert time.perf_counter() - before < 0.5 * again.calls + 5  # no timeouts waited again


def test_process_guard_survives_a_crash_and_a_hang():
    guard = Guard(timeout_s=20, isolation="process")
    try:
        assert guard.call(math.sqrt, 16.0) == 4.0
        with pytest.raises(MeasureCrash, match="died"):
            guard.call(os._exit, 3)
        guard.timeout_s = 1.0
        with pytest.raises(MeasureTimeout):
            guard.call(time.sleep, 30)
        guard.timeout_s = 20
        with pytest.raises(RuntimeError, match="math domain error"):
            guard.call(math.sqrt, -1.0)
        assert guard.call(math.sqrt, 9.0) == 3.0  # a fresh child answers after the crash and the hang
        assert guard._worker.starts == 3
    finally:
        guard.close()
    with pytest.raises(ValueError, match="isolation"):
        Guard(isolation="container")


def test_a_file_measurer_asked_for_an_architecture_says_what_to_define():
    from keras_eff.donna.measurers import LiteRTLatency

    with pytest.raises(TypeError, match="needs_model = False must define measure_architecture"):
        LiteRTLatency().measure_architecture(None, None)
