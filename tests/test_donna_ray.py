"""DONNA on Ray: each training job reserves the configured GPU count (a fake GPU declared on a local Ray, so this runs
on a CPU machine); a pool of remote measurer actors measures a generation's candidates concurrently, the cache
filled as one at a time would fill it."""

import os

import pytest

from keras_eff.donna import PipelineConfig, RayExecutor, builtin_config


def _ray_config(**executor):
    cfg = builtin_config("tiny")
    cfg["executor"] = {"kind": "ray", **executor}
    return cfg


@pytest.mark.parametrize(
    "value,needle",
    [
        (-1, "executor.gpus_per_job: -1 must be >= 0"),
        (1.5, "executor.gpus_per_job: 1.5 is a fraction above 1"),
        ("one", "executor.gpus_per_job: 'one' must be a number of GPUs per job"),
        (True, "executor.gpus_per_job: True must be a number"),
    ],
)
def test_gpus_per_job_is_checked(value, needle):
    pytest.importorskip("ray")
    with pytest.raises(ValueError) as err:
        PipelineConfig.load(_ray_config(gpus_per_job=value))
    assert needle in str(err.value)


def test_gpus_per_job_reaches_the_executor(tmp_path):
    pytest.importorskip("ray")
    from keras_eff.donna import DonnaPipeline

    cfg = PipelineConfig.load(_ray_config(num_cpus=2, gpus_per_job=0.5))
    assert cfg.executor["gpus_per_job"] == 0.5
    executor = DonnaPipeline(cfg, tmp_path / "out", verbose=0).executor()  # not started: Ray starts on first map
    assert isinstance(executor, RayExecutor)
    assert executor.task_options()["num_gpus"] == 0.5 and executor.task_options()["num_cpus"] == 1.0
    assert executor.get_config()["gpus_per_job"] == 0.5 and "0.5 GPU per job" in executor.describe()
    assert RayExecutor().task_options()["num_gpus"] == 0.0  # the default: no GPU
    assert RayExecutor(gpus_per_job=2).gpus_per_job == 2.0
    assert not (tmp_path / "out").exists()


def test_ray_tasks_get_the_gpus_they_reserve():
    """Two jobs with gpus_per_job=0.5 share the one (fake) GPU of a local Ray: each is assigned half of it and sees
    GPU 0; with gpus_per_job=0 a job is assigned none and sees no GPU."""
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)

    def job(i):  # by value: a closure travels to the worker whole

        import ray

        return {
            "i": i,
            "resources": ray.get_runtime_context().get_assigned_resources(),
            "gpu_ids": ray.get_gpu_ids(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"),
        }

    try:
        shared = RayExecutor(gpus_per_job=0.5).map(job, [0, 1])
        none = RayExecutor().map(job, [2])
    finally:
        ray.shutdown()
    assert [r["i"] for r in shared] == [0, 1]
    for r in shared:
        assert r["resources"].get("GPU") == 0.5 and r["resources"].get("CPU") == 1.0
        assert len(r["gpu_ids"]) == 1 and r["visible"] == str(r["gpu_ids"][0])
        assert r["growth"] == "true"  # two jobs on one GPU must not each claim all of its memory
    assert "GPU" not in none[0]["resources"] and none[0]["gpu_ids"] == []
    assert none[0]["visible"] == ""  # a job that reserves no GPU sees none


def test_remote_measurer_actors_are_checked():
    pytest.importorskip("ray")
    from keras_eff.donna import RayRemoteMeasurer, measurer_from_config

    with pytest.raises(ValueError, match="RayRemoteMeasurer.actors: 0 must be an integer >= 1"):
        RayRemoteMeasurer(actors=0)
    with pytest.raises(ValueError, match="RayRemoteMeasurer.actors: 1.5 must be a whole number"):
        measurer_from_config({"kind": "ray", "actors": 1.5})
    m = measurer_from_config({"kind": "ray", "actors": 2.0})
    assert m.actors == 2 and m.parallel and m.get_config()["actors"] == 2
    assert m.cache_key() == RayRemoteMeasurer().cache_key()  # the pool's size does not change what is measured
    assert not RayRemoteMeasurer().parallel


@pytest.mark.slow
def test_pool_of_two_actors_measures_candidates_concurrently(tmp_path):
    ray = pytest.importorskip("ray")
    from keras_eff.donna import CostEvaluator, MeasurementCache, RayRemoteMeasurer, Scenario, tiny_space
    from keras_eff.donna.measure_cache import measurement_key

    space = tiny_space()
    archs = space.sample(3, seed=5)
    inner = {"kind": "litert", "runs": 5, "warmup": 1, "rounds": 1}  # concurrent on one host: fine for a test
    remote = RayRemoteMeasurer(inner, device="pool", num_cpus=2, actors=2, timeout_s=120)
    scenario = Scenario(name="pool", measurers=[remote.get_config()], objective="latency_us")
    cache = MeasurementCache(tmp_path / "m.json")
    evaluator = CostEvaluator(space, scenario, cache, timeout_s=120, measurers=[remote])
    try:
        first = evaluator.evaluate_many(archs)
        again = evaluator.evaluate_many(archs)  # all cached: nothing measured again
        one = remote.measure_many([])
    finally:
        evaluator.close()
    assert not ray.is_initialized()
    assert one == []
    assert [r["ok"] for r in first] == [True] * 3, [r["error"] for r in first]
    assert remote.max_in_flight == 2  # two candidates were out at once, one per actor
    assert len({r["metrics"]["measured_by"] for r in first}) == 2  # both actors measured
    assert all(r["metrics"]["flash_bytes"] > 0 and r["metrics"]["latency_us"] > 0 for r in first)
    assert evaluator.n_measured == 3 and all(r["cached"] for r in again)
    # the cache holds each candidate under its own key, with its own file's size
    saved = MeasurementCache(tmp_path / "m.json")
    for arch, r in zip(archs, first):
        entry = saved.get(measurement_key(evaluator.space, arch, remote))
        assert entry["ok"] and entry["arch"] == str(arch)
        assert entry["metrics"]["flash_bytes"] == r["metrics"]["flash_bytes"]
    assert len({r["metrics"]["flash_bytes"] for r in first}) == 3  # three different architectures, three sizes
