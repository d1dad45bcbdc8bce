"""The cost of an architecture in a scenario: cached measurements, measured where missing, failures recorded.

:class:`CostEvaluator` looks each of the scenario's measurers up in the :class:`MeasurementCache`; for those that
miss it converts the architecture to int8 once and runs them, under a :class:`Guard` (deadline, thread or process
isolation). A crash, an exception or a timeout marks the candidate failed (the search treats it as infeasible and
goes on) and is cached too, so a resumed search does not retry it (``retry_failed=True`` does).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .guard import Guard
from .measure_cache import MeasurementCache, measurement_key
from .measurers import convert_job, measure_all, measure_bytes, measurer_from_config
from .space import Architecture, SearchSpace


def _measure_job(space_config: dict, arch_text: str, measurer_configs: list, seed: int = 0) -> dict:
    """Module-level so that a child process can run it: plain data in, plain data out."""
    space = SearchSpace.from_config(space_config)
    return measure_all(space, Architecture.parse(arch_text), [measurer_from_config(m) for m in measurer_configs], seed)


class CostEvaluator:
    """The measured cost of architectures of a space in one scenario, through a measurement cache.

    Each of the scenario's measurers is looked up in the cache; for those that miss, the architecture is converted
    to int8 once and measured under a `Guard` (deadline, thread or process isolation). A crash, an exception or a
    timeout fails that candidate only, and is cached too. :func:`search` makes one; make your own to measure
    architectures outside a search. ``n_measured`` and ``n_failed`` count the architectures measured (not found in
    the cache) and those that failed; call :meth:`close` when done.

    Args:
        space: The `SearchSpace`; measured at the scenario's input size when it sets one.
        scenario: The `Scenario`: its measurers, unless ``measurers`` is given, and its input size.
        cache: A `MeasurementCache`; None: a new one in memory.
        timeout_s: Deadline of one candidate's conversion and measurements, in seconds.
        isolation: ``"thread"`` (a hung call is abandoned) or ``"process"`` (calls run in a child process that a
            crash or a timeout kills and restarts).
        retry_failed: Whether to measure again the candidates whose cached entry is a failure.
        measurers: Measurers to use instead of the scenario's (e.g. test doubles); None: the scenario's.
        workers: How many processes :meth:`evaluate_many` converts candidates in (1: in this process).

    Raises:
        ValueError: If ``isolation`` is unknown or ``timeout_s`` is not positive.

    Example:
        ```python
        evaluator = CostEvaluator(tiny_space(), Scenario("litert_1thread"), MeasurementCache("measurements.json"))
        try:
            cost = evaluator.evaluate(tiny_space().reference())
        finally:
            evaluator.close()
        cost["ok"], cost["metrics"]["latency_us"]
        ```
    """

    def __init__(
        self,
        space: SearchSpace,
        scenario,
        cache: MeasurementCache | None = None,
        timeout_s: float = 120.0,
        isolation: str = "thread",
        retry_failed: bool = False,
        measurers=None,
        workers: int = 1,
    ):
        self.scenario = scenario
        self.space = scenario.space_for(space)
        self.measurers = list(measurers) if measurers is not None else scenario.make_measurers()
        self.cache = cache if cache is not None else MeasurementCache()
        self.guard = Guard(timeout_s, isolation)
        self.retry_failed = retry_failed
        self.n_measured = self.n_failed = 0
        self.seconds = 0.0
        self.workers = int(workers)
        self._pool = None

    def _run(self, arch, missing):
        ms = [self.measurers[i] for i in missing]
        if self.guard.isolation == "process":
            return self.guard.call(_measure_job, self.space.get_config(), str(arch), [m.get_config() for m in ms])
        return self.guard.call(measure_all, self.space, arch, ms)

    def _lookup(self, arch):
        keys = [measurement_key(self.space, arch, m) for m in self.measurers]
        entries = [self.cache.get(k) for k in keys]
        missing = [i for i, e in enumerate(entries) if e is None or (self.retry_failed and not e["ok"])]
        return keys, entries, missing

    def _record(self, arch, keys, entries, missing, out=None, err=None, t0=0.0) -> dict:
        if missing:
            self.n_measured += 1
            if err is None:
                for j, i in enumerate(missing):
                    entries[i] = {
                        "arch": str(arch),
                        "measurer": self.measurers[i].get_config(),
                        "ok": True,
                        "metrics": out["metrics"][j],
                        "error": None,
                        "seconds": out["convert_seconds"] + out["metrics"][j]["measure_seconds"],
                    }
            else:
                self.n_failed += 1
                msg = f"{type(err).__name__}: {err}".strip()
                for i in missing:
                    entries[i] = {
                        "arch": str(arch),
                        "measurer": self.measurers[i].get_config(),
                        "ok": False,
                        "metrics": {},
                        "error": msg[:2000],
                        "seconds": time.perf_counter() - t0,
                    }
            for i in missing:
                self.cache.put(keys[i], entries[i])
        metrics: dict[str, Any] = {}
        for e in entries:  # later measurers do not overwrite a metric an earlier one gave
            for k, v in e["metrics"].items():
                metrics.setdefault(k, v)
        ok = all(e["ok"] for e in entries)
        errors = [e["error"] for e in entries if not e["ok"]]
        dt = time.perf_counter() - t0
        self.seconds += dt
        return {
            "ok": ok,
            "metrics": metrics,
            "error": errors[0] if errors else None,
            "cached": not missing,
            "seconds": dt,
        }

    def evaluate(self, arch: Architecture) -> dict:
        """The cost of one architecture: cached, or measured now (and cached).

        Args:
            arch: An architecture of the space.

        Returns:
            A dict: ``ok`` (every measurer succeeded), ``metrics`` (the measurers' metrics merged, the first
            measurer's value kept where two give the same metric), ``error`` (the first failure's message, or
            None), ``cached`` (nothing had to be measured) and ``seconds``. A failure is returned, not raised.
        """
        t0 = time.perf_counter()
        keys, entries, missing = self._lookup(arch)
        out = err = None
        if missing:
            try:
                out = self._run(arch, missing)
            except Exception as e:  # noqa: BLE001 - any failure of any measurer fails this candidate only
                err = e
        return self._record(arch, keys, entries, missing, out, err, t0)

    def pool(self):
        """The process pool that converts candidates off the driver (``workers`` processes, started once).

        Returns:
            A ``concurrent.futures.ProcessPoolExecutor`` (spawned processes), shut down by :meth:`close`.
        """
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def evaluate_many(self, archs) -> list:
        """``[evaluate(a) for a in archs]``, with the int8 conversions of the uncached ones run concurrently in
        ``workers`` processes; the measurers then run one candidate at a time here (concurrent runs would disturb
        each other's latency), each under the guard's deadline, except a measurer with a pool of its own
        (``parallel``, e.g. ``RayRemoteMeasurer(actors=N)``): it gets every candidate's file at once
        (``measure_many``) and measures them on its N actors concurrently, with its own deadline per call. Results
        are recorded in the cache here, one candidate after the other, whatever order they finished in.

        Args:
            archs: Architectures of the space.

        Returns:
            One dict per architecture, in order, as :meth:`evaluate` returns them.
        """
        archs = list(archs)
        pooled = [i for i, m in enumerate(self.measurers) if getattr(m, "parallel", False)]
        if (self.workers <= 1 and not pooled) or len(archs) < 2:
            return [self.evaluate(a) for a in archs]

        t0 = time.perf_counter()
        plans = [self._lookup(a) for a in archs]
        needs = [bool(missing) and any(self.measurers[i].needs_model for i in missing) for _, _, missing in plans]
        futures = {}
        if self.workers > 1:
            futures = {
                k: self.pool().submit(convert_job, self.space.get_config(), str(a))
                for k, a in enumerate(archs)
                if needs[k]
            }
        convs = {}  # candidate -> {"bytes", "convert_seconds"}, or the exception that failed its conversion
        for k, arch in enumerate(archs):
            if not plans[k][2]:
                continue
            try:
                if k in futures:
                    remaining = max(1.0, self.guard.timeout_s - (time.perf_counter() - t0))
                    convs[k] = futures[k].result(timeout=remaining)
                elif needs[k]:
                    convs[k] = self.guard.call(convert_job, self.space.get_config(), str(arch))
                else:
                    convs[k] = {"bytes": None, "convert_seconds": 0.0}
            except FutureTimeout:
                convs[k] = TimeoutError(f"no int8 conversion within {self.guard.timeout_s:g} s")
            except Exception as e:  # noqa: BLE001 - the candidate fails, the search goes on
                convs[k] = e
        remote = {}  # (candidate, measurer index) -> metrics or exception, from the pooled measurers
        for i in pooled:
            ks = [k for k, (_, _, missing) in enumerate(plans) if i in missing and isinstance(convs[k], dict)]
            for k, r in zip(ks, self.measurers[i].measure_many([convs[k]["bytes"] for k in ks])):
                remote[(k, i)] = r
        results = []
        for k, (arch, (keys, entries, missing)) in enumerate(zip(archs, plans)):
            t1 = time.perf_counter()
            out = err = None
            if missing:
                try:
                    conv = convs[k]
                    if isinstance(conv, Exception):
                        raise conv
                    local = [i for i in missing if i not in pooled]
                    here = (
                        self.guard.call(
                            measure_bytes, conv["bytes"], self.space, arch, [self.measurers[i] for i in local]
                        )
                        if local
                        else {}
                    )
                    metrics = {}
                    for j, i in enumerate(missing):
                        m = remote[(k, i)] if i in pooled else here[local.index(i)]
                        if isinstance(m, Exception):
                            raise m
                        metrics[j] = m
                    out = {"metrics": metrics, "convert_seconds": conv["convert_seconds"]}
                except Exception as e:  # noqa: BLE001 - the candidate fails, the search goes on
                    err = e
            results.append(self._record(arch, keys, entries, missing, out, err, t1))
        return results

    def close(self):
        """Stops the conversion pool, the guard's child process and the measurers' own resources (Ray actors).

        Returns:
            None.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.guard.close()
        for m in self.measurers:
            if hasattr(m, "shutdown"):
                m.shutdown()
