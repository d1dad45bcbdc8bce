"""The cost of an architecture in a scenario: cached measurements, measured where missing, failures recorded.

:class:`CostEvaluator` looks each of the scenario's measurers up in the :class:`MeasurementCache`; for those that
miss it converts the architecture to int8 once and runs them, under a :class:`Guard` (deadline, thread or process
isolation). A crash, an exception or a timeout marks the candidate failed (the search treats it as infeasible and
goes on) and is cached too, so a resumed search does not retry it (``retry_failed=True`` does).
"""

from __future__ import annotations

import time

from .guard import Guard
from .measure_cache import MeasurementCache, measurement_key
from .measurers import measure_all, measurer_from_config
from .space import Architecture, SearchSpace


def _measure_job(space_config: dict, arch_text: str, measurer_configs: list, seed: int = 0) -> dict:
    """Module-level so that a child process can run it: plain data in, plain data out."""
    space = SearchSpace.from_config(space_config)
    return measure_all(space, Architecture.parse(arch_text), [measurer_from_config(m) for m in measurer_configs],
                       seed)


class CostEvaluator:
    """Costs of architectures of ``space`` in ``scenario``. ``evaluate(arch)`` returns ``{"ok", "metrics",
    "error", "cached", "seconds"}``; ``n_measured`` counts the architectures measured (not found in the cache)."""

    def __init__(self, space: SearchSpace, scenario, cache: MeasurementCache | None = None,
                 timeout_s: float = 120.0, isolation: str = "thread", retry_failed: bool = False, measurers=None):
        self.scenario = scenario
        self.space = scenario.space_for(space)
        self.measurers = list(measurers) if measurers is not None else scenario.make_measurers()
        self.cache = cache if cache is not None else MeasurementCache()
        self.guard = Guard(timeout_s, isolation)
        self.retry_failed = retry_failed
        self.n_measured = self.n_failed = 0
        self.seconds = 0.0

    def _run(self, arch, missing):
        ms = [self.measurers[i] for i in missing]
        if self.guard.isolation == "process":
            return self.guard.call(_measure_job, self.space.get_config(), str(arch), [m.get_config() for m in ms])
        return self.guard.call(measure_all, self.space, arch, ms)

    def evaluate(self, arch: Architecture) -> dict:
        t0 = time.perf_counter()
        keys = [measurement_key(self.space, arch, m) for m in self.measurers]
        entries = [self.cache.get(k) for k in keys]
        missing = [i for i, e in enumerate(entries) if e is None or (self.retry_failed and not e["ok"])]
        if missing:
            self.n_measured += 1
            try:
                out = self._run(arch, missing)
                for j, i in enumerate(missing):
                    entries[i] = {"arch": str(arch), "measurer": self.measurers[i].get_config(), "ok": True,
                                  "metrics": out["metrics"][j], "error": None,
                                  "seconds": out["convert_seconds"] + out["metrics"][j]["measure_seconds"]}
            except Exception as err:  # noqa: BLE001 - any failure of any measurer fails this candidate only
                self.n_failed += 1
                msg = f"{type(err).__name__}: {err}".strip()
                for i in missing:
                    entries[i] = {"arch": str(arch), "measurer": self.measurers[i].get_config(), "ok": False,
                                  "metrics": {}, "error": msg[:2000], "seconds": time.perf_counter() - t0}
            for i in missing:
                self.cache.put(keys[i], entries[i])
        metrics = {}
        for e in entries:  # later measurers do not overwrite a metric an earlier one gave
            for k, v in e["metrics"].items():
                metrics.setdefault(k, v)
        ok = all(e["ok"] for e in entries)
        errors = [e["error"] for e in entries if not e["ok"]]
        dt = time.perf_counter() - t0
        self.seconds += dt
        return {"ok": ok, "metrics": metrics, "error": errors[0] if errors else None, "cached": not missing,
                "seconds": dt}

    def close(self):
        self.guard.close()
        for m in self.measurers:
            if hasattr(m, "shutdown"):
                m.shutdown()
