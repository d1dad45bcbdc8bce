"""Measurers on real int8 files: LiteRT latency and the microcontroller budget, the on-disk cache keyed by
architecture and scenario, and a Ray actor standing in for a remote device."""

import json

import numpy as np
import pytest

import tflite_export as te
from keras_eff.donna import (
    BlockSpace,
    CostEvaluator,
    LiteRTLatency,
    MeasurementCache,
    MicroBudget,
    Scenario,
    SearchSpace,
    int8_model,
    measurer_from_config,
)
from keras_eff.donna.measure_cache import measurement_key


def one_block_space():
    return SearchSpace(
        blocks=(BlockSpace(8, 2, kernels=(3, 5)),),
        input_shape=(16, 16, 1),
        stem_channels=4,
        head_channels=8,
        name="one_block",
    )


@pytest.fixture(scope="module")
def int8_file():
    space = one_block_space()
    return space, space.reference(), int8_model(space, space.reference())


def test_litert_latency_is_positive_and_cached_by_architecture_and_scenario(tmp_path):
    space = one_block_space()
    arch = space.sample(1, seed=0)[0]
    fast = {"kind": "litert", "runs": 20, "warmup": 5, "rounds": 1}
    path = tmp_path / "measurements.json"
    ev = CostEvaluator(space, Scenario("one", [fast]), MeasurementCache(path))
    first = ev.evaluate(arch)
    assert first["ok"] and not first["cached"] and ev.n_measured == 1
    assert first["metrics"]["latency_us"] > 0 and first["metrics"]["flash_bytes"] > 1000
    # a new evaluator over the same file measures nothing
    ev2 = CostEvaluator(space, Scenario("again", [fast]), MeasurementCache(path))
    second = ev2.evaluate(arch)
    assert second["cached"] and ev2.n_measured == 0
    assert second["metrics"]["latency_us"] == first["metrics"]["latency_us"]
    doc = json.loads(path.read_text())
    assert len(doc["entries"]) == 1 and next(iter(doc["entries"].values()))["arch"] == str(arch)
    # another thread count, another input size or another architecture is another key
    base = measurement_key(space, arch, measurer_from_config(fast))
    assert measurement_key(space, arch, measurer_from_config({**fast, "num_threads": 2})) != base
    bigger = Scenario("big", [fast], input_shape=(24, 24, 1)).space_for(space)
    assert bigger.input_shape == (24, 24, 1) and measurement_key(bigger, arch, measurer_from_config(fast)) != base
    other = next(a for a in space.sample(2, seed=1) if a != arch)
    assert measurement_key(space, other, measurer_from_config(fast)) != base
    with pytest.raises(ValueError, match="kind 'tpu' is unknown"):
        measurer_from_config({"kind": "tpu"})
    with pytest.raises(ValueError, match="num_threads"):
        LiteRTLatency(num_threads=0)


def test_micro_budget_gives_flash_ram_and_ops(int8_file):
    _, _, data = int8_file
    m = MicroBudget().measure(data)
    assert m["flash_bytes"] == len(data)
    arena = te.find_arena_size(data, margin=0.0)
    assert m["ram_bytes"] == arena.recommended_bytes and m["ram_bytes"] >= m["ram_host_min_bytes"] > 0
    assert m["micro_unsupported_ops"] == 0 and "CONV_2D" in m["micro_ops"]
    assert "estimate" in m["ram_note"]
    # a scenario with a micro measurer requires every op to be supported
    sc = Scenario("mcu", [{"kind": "micro"}], objective="flash_bytes", limits={"ram_bytes": 10**6})
    assert sc.feasible(m) and not sc.feasible({**m, "micro_unsupported_ops": 1})
    assert not sc.feasible({**m, "ram_bytes": 2 * 10**6})


@pytest.mark.slow
def test_ray_actor_measures_remotely(int8_file):
    ray = pytest.importorskip("ray")
    from keras_eff.donna import RayRemoteMeasurer

    _, _, data = int8_file
    remote = RayRemoteMeasurer(
        {"kind": "litert", "runs": 20, "warmup": 5, "rounds": 1}, device="local-actor", num_cpus=1, timeout_s=120
    )
    try:
        out = remote.measure(data)
        again = remote.measure(data)  # the same actor serves the next call
    finally:
        remote.shutdown()
    assert not ray.is_initialized()
    assert out["latency_us"] > 0 and again["latency_us"] > 0 and out["flash_bytes"] == len(data)
    assert out["measured_on"]
    assert remote.cache_key()["device"] == "local-actor"
    assert np.isfinite(out["latency_us"])
