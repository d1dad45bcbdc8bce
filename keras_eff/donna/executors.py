"""Executors: one interface to run independent jobs (distilling a block, finetuning an architecture).

``executor.map(fn, jobs)`` returns ``[fn(job) for job in jobs]`` in order. :class:`InProcessExecutor` runs them
one after the other here; :class:`RayExecutor` runs them as Ray tasks (``pip install keras-eff[ray]``), on a local
Ray started on demand or on the cluster that ``address`` names. ``fn`` must be a module-level function and jobs plain
data (numbers, strings, lists, dicts, numpy arrays), so that they travel to other processes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from tqdm.auto import tqdm


class Executor(ABC):
    """Runs independent jobs (distilling a block, finetuning an architecture); subclasses decide where.

    ``fn`` must be a module-level function and the jobs plain data (numbers, strings, lists, dicts, numpy arrays),
    so that they can travel to other processes.

    Example:
        ```python
        class ThreadExecutor(Executor):
            def map(self, fn, jobs, desc="jobs"):
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    return list(pool.map(fn, jobs))
        ```
    """

    @abstractmethod
    def map(self, fn, jobs, desc: str = "jobs") -> list:
        """``[fn(job) for job in jobs]``, in the jobs' order.

        Args:
            fn: A module-level function of one job.
            jobs: The jobs (plain data).
            desc: Progress-bar label.

        Returns:
            The results, in the jobs' order.
        """

    def get_config(self) -> dict:
        """The executor's settings.

        Returns:
            A plain dict (empty for executors without settings).
        """
        return {}

    def describe(self) -> str:
        """A short description for logs.

        Returns:
            The class name (subclasses add their settings).
        """
        return type(self).__name__


class InProcessExecutor(Executor):
    """Runs the jobs in this process, one after the other (the default executor).

    Example:
        ```python
        InProcessExecutor().map(abs, [-1, 2, -3])   # [1, 2, 3]
        ```
    """

    def map(self, fn, jobs, desc: str = "jobs") -> list:
        """``[fn(job) for job in jobs]`` here, with a progress bar when there are two jobs or more.

        Args:
            fn: A function of one job.
            jobs: The jobs.
            desc: Progress-bar label.

        Returns:
            The results, in the jobs' order.
        """
        jobs = list(jobs)
        return [fn(job) for job in tqdm(jobs, desc=desc, disable=len(jobs) < 2)]


def check_gpus_per_job(value, where: str = "gpus_per_job") -> float:
    """``value`` as a GPU count per Ray task: a number >= 0, a fraction (0.25: four tasks share one GPU) only below
    1, whole numbers above (as Ray allows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{where}: {value!r} must be a number of GPUs per job (0, a fraction such as 0.5, or a whole number)"
        )
    if value < 0:
        raise ValueError(f"{where}: {value} must be >= 0 (0: the jobs use no GPU)")
    if value > 1 and value != int(value):
        raise ValueError(
            f"{where}: {value} is a fraction above 1, which Ray does not allow; give a fraction below "
            f"1 (GPUs shared) or a whole number"
        )
    return float(value)


class RayExecutor(Executor):
    """Runs the jobs as Ray tasks. ``address`` picks a running cluster (None starts a local Ray with ``num_cpus``,
    or uses the Ray already initialized in this process). Each task reserves ``cpus_per_job`` CPUs and
    ``gpus_per_job`` GPUs (Ray's ``num_gpus`` of the task: 0 by default, fractions below 1 share a GPU, e.g. 0.5
    runs two jobs per GPU); Ray makes the reserved GPUs the only ones the task sees (``CUDA_VISIBLE_DEVICES``), and
    a task that reserves none sees none (``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1``), so that CPU jobs never land on
    a GPU unscheduled. ``env_vars`` go with every task (its runtime environment); by default TensorFlow's logs are
    quieted and its GPU memory grows on demand (``TF_FORCE_GPU_ALLOW_GROWTH``), so that jobs sharing a GPU do not
    each claim all of its memory. A Ray started here is left running for the next map; call :meth:`shutdown` to
    stop it. Needs Ray (``pip install 'keras-eff[ray]'``).

    A Ray address is trusted: the jobs (data, weights, pickled functions) go to it and pickled results come back.

    Args:
        address: The Ray cluster to connect to, e.g. ``"ray://host:10001"``, when Ray is not initialized in this
            process yet (a Ray already initialized is used as it is); None: a local Ray started here.
        num_cpus: CPUs of a local Ray started here (None: Ray's default, all of them).
        cpus_per_job: CPUs each task reserves; positive.
        env_vars: Environment variables of every task, added to the defaults (``TF_CPP_MIN_LOG_LEVEL=3``,
            ``TF_FORCE_GPU_ALLOW_GROWTH=true``, ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1``).
        gpus_per_job: GPUs each task reserves: 0, a fraction below 1 or a whole number.

    Raises:
        ImportError: If Ray is not installed.
        ValueError: If ``cpus_per_job`` is not positive or ``gpus_per_job`` is negative or a fraction above 1.

    Example:
        ```python
        executor = RayExecutor(num_cpus=4, gpus_per_job=0.5)   # two jobs per GPU
        try:
            library = train_block_library(space, reference, x_bkd, x_val, executor=executor)
        finally:
            executor.shutdown()
        ```
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_job: float = 1.0,
        env_vars: dict | None = None,
        gpus_per_job: float = 0.0,
    ):
        try:
            import ray  # noqa: F401, PLC0415 - Ray is optional: checked here to name the extra to install
        except ImportError:
            raise ImportError("RayExecutor needs Ray: pip install 'keras-eff[ray]' (or pip install ray)") from None
        if cpus_per_job <= 0:
            raise ValueError(f"cpus_per_job: {cpus_per_job} must be positive")
        self.address, self.num_cpus, self.cpus_per_job = address, num_cpus, cpus_per_job
        self.gpus_per_job = check_gpus_per_job(gpus_per_job)
        self.env_vars = {
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",
            **(env_vars or {}),
        }
        self._started = False

    def _ensure(self):
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        if not ray.is_initialized():
            kwargs = (
                {"address": self.address} if self.address else {"num_cpus": self.num_cpus, "include_dashboard": False}
            )
            ray.init(**kwargs, runtime_env={"env_vars": self.env_vars}, log_to_driver=False, ignore_reinit_error=True)
            self._started = True

    def map(self, fn, jobs, desc: str = "jobs") -> list:
        """Runs each job as a Ray task (starting Ray if needed) and waits for all of them.

        Args:
            fn: A module-level function of one job.
            jobs: The jobs (plain data).
            desc: Progress-bar label.

        Returns:
            The results, in the jobs' order.

        Raises:
            ray.exceptions.RayTaskError: If a job raised (tasks are not retried).
        """
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        self._ensure()
        remote = ray.remote(**self.task_options())(fn)
        refs = [remote.remote(job) for job in jobs]
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{desc} (ray)") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return ray.get(refs)

    def task_options(self) -> dict:
        """The options of every task this executor starts (``ray.remote(**options)``).

        Returns:
            A dict with ``num_cpus``, ``num_gpus``, ``max_retries`` (0) and ``runtime_env``.
        """
        return {
            "num_cpus": self.cpus_per_job,
            "num_gpus": self.gpus_per_job,
            "max_retries": 0,
            "runtime_env": {"env_vars": dict(self.env_vars)},
        }

    def shutdown(self) -> None:
        """Stops the local Ray if this executor started it (a Ray it found running is left alone).

        Returns:
            None.
        """
        import ray  # noqa: PLC0415 - Ray is optional (pip install keras-eff[ray])

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def get_config(self) -> dict:
        """The executor's settings (``env_vars`` left out).

        Returns:
            A dict with ``address``, ``num_cpus``, ``cpus_per_job`` and ``gpus_per_job``.
        """
        return {
            "address": self.address,
            "num_cpus": self.num_cpus,
            "cpus_per_job": self.cpus_per_job,
            "gpus_per_job": self.gpus_per_job,
        }

    def describe(self) -> str:
        """A short description for logs.

        Returns:
            E.g. ``"RayExecutor(local, num_cpus=4, 0.5 GPU per job)"``.
        """
        gpus = f", {self.gpus_per_job:g} GPU per job" if self.gpus_per_job else ""
        return f"RayExecutor({self.address or f'local, num_cpus={self.num_cpus}'}{gpus})"


def make_executor(kind: str = "inprocess", **kwargs) -> Executor:
    """An executor by name, as the pipeline config's ``executor`` section names it.

    Args:
        kind: ``"inprocess"`` (or ``"local"``, or None) for an `InProcessExecutor`, ``"ray"`` for a `RayExecutor`.
        **kwargs: Passed to `RayExecutor` (``address``, ``num_cpus``, ``cpus_per_job``, ``env_vars``,
            ``gpus_per_job``); ignored for the in-process executor.

    Returns:
        A new `Executor`.

    Raises:
        ValueError: If ``kind`` is unknown, or a `RayExecutor` argument is invalid.
        ImportError: If ``kind="ray"`` and Ray is not installed.

    Example:
        ```python
        executor = make_executor("ray", num_cpus=4)
        ```
    """
    if kind in ("inprocess", "local", None):
        return InProcessExecutor()
    if kind == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"executor: {kind!r} is unknown; choose 'inprocess' or 'ray'")
