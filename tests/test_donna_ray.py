"""DONNA on Ray: each training job reserves the configured GPU count (a fake GPU declared on a local Ray, so this runs
on a CPU machine)."""

import os

import pytest

from keras_eff.donna import PipelineConfig, RayExecutor, builtin_config


def _ray_config(**executor):
    cfg = builtin_config("tiny")
    cfg["executor"] = {"kind": "ray", **executor}
    return cfg


@pytest.mark.parametrize("value,needle", [
    (-1, "executor.gpus_per_job: -1 must be >= 0"),
    (1.5, "executor.gpus_per_job: 1.5 is a fraction above 1"),
    ("one", "executor.gpus_per_job: 'one' must be a number of GPUs per job"),
    (True, "executor.gpus_per_job: True must be a number"),
])
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
        import os

        import ray

        return {"i": i, "resources": ray.get_runtime_context().get_assigned_resources(),
                "gpu_ids": ray.get_gpu_ids(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}

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

