"""Candidates converted concurrently off the driver give the same files as one at a time; the measurement cache key
holds the runtime's and TensorFlow's versions."""

import pytest

from keras_eff.donna import (
    CostEvaluator,
    LiteRTLatency,
    MeasurementCache,
    Scenario,
    SearchConfig,
    measure_cache,
    tiny_space,
)
from keras_eff.donna.measure_cache import measurement_key


def test_cache_key_changes_with_runtime_and_converter_versions(monkeypatch):
    space, m = tiny_space(), LiteRTLatency()
    arch = space.reference()
    assert m.cache_key()["litert"] is not None  # ai-edge-litert is installed here
    versions = {"tensorflow": "2.21.0", "keras": "3.15.1", "ai-edge-litert": "2.3.0"}
    monkeypatch.setattr(measure_cache, "package_version", lambda name: versions.get(name))
    base = measurement_key(space, arch, m)
    for name in versions:
        bumped = dict(versions, **{name: "99.0"})
        monkeypatch.setattr(measure_cache, "package_version", lambda n, v=bumped: v.get(n))
        assert measurement_key(space, arch, m) != base, name


def test_workers_are_checked():
    with pytest.raises(ValueError, match="search.workers: 1.5 must be a whole number"):
        SearchConfig.from_config({"workers": 1.5})
    with pytest.raises(ValueError, match="SearchConfig.workers: 0 must be an integer >= 1"):
        SearchConfig.from_config({"workers": 0})


def test_parallel_conversion_matches_sequential(tmp_path):
    space = tiny_space()
    archs = space.sample(3, seed=5)
    scenario = Scenario(name="t", measurers=[{"kind": "litert", "runs": 5, "warmup": 1, "rounds": 1}])
    seq = CostEvaluator(space, scenario, MeasurementCache(), timeout_s=120)
    par = CostEvaluator(space, scenario, MeasurementCache(tmp_path / "m.json"), timeout_s=120, workers=2)
    try:
        a = [seq.evaluate(x) for x in archs]
        b = par.evaluate_many(archs)
        again = par.evaluate_many(archs)  # all cached now: nothing converted again
    finally:
        seq.close()
        par.close()
    assert [r["ok"] for r in b] == [True] * 3
    assert [r["metrics"]["flash_bytes"] for r in a] == [r["metrics"]["flash_bytes"] for r in b]
    assert all(r["metrics"]["latency_us"] > 0 for r in b)
    assert par.n_measured == 3 and all(r["cached"] for r in again)
    assert len(MeasurementCache(tmp_path / "m.json")) == 3
