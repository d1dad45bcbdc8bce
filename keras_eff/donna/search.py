"""DONNA step C: NSGA-II (pymoo) over the block choices, predicted accuracy against measured cost.

Each decision variable is one block position's choice index. Objectives: maximize the predictor's accuracy,
minimize the scenario's measured objective (latency by default). Constraints: the scenario's limits (latency target,
flash and RAM budgets, TFLite Micro op support) and "the measurement succeeded". The search stops after
``max_evals`` evaluations or ``max_time_s`` seconds. The Pareto front is taken over every feasible architecture
evaluated (not only the last population), saved as JSON and drawn as a plot with the reference marked.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tflite_export.files import read_json

from .space import Architecture, SearchSpace

FORMAT = "keras_eff.donna.SearchResult"
_BIG = 1e12


@dataclass
class SearchConfig:
    """NSGA-II with ``pop_size`` per generation; at most ``max_evals`` evaluations and ``max_time_s`` seconds
    (None: no time cap). Each candidate's measurement gets ``timeout_s`` under ``isolation`` (``"thread"`` or
    ``"process"``). The defaults end within about 15 minutes on 2 cores for the default space."""

    pop_size: int = 24
    max_evals: int = 240
    max_time_s: float | None = 840.0
    timeout_s: float = 120.0
    isolation: str = "thread"
    retry_failed: bool = False
    workers: int = 1
    seed: int = 0

    def __post_init__(self):
        for name in ("pop_size", "max_evals"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise ValueError(f"SearchConfig.{name}: {v!r} must be an integer >= 2")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"SearchConfig.workers: {self.workers!r} must be an integer >= 1 (1: convert in the "
                             f"driver, N: N conversion processes)")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"SearchConfig.max_time_s: {self.max_time_s} must be positive (or None for no cap)")
        if not self.timeout_s > 0:
            raise ValueError(f"SearchConfig.timeout_s: {self.timeout_s} must be positive")
        from .guard import ISOLATIONS

        if self.isolation not in ISOLATIONS:
            raise ValueError(f"SearchConfig.isolation: {self.isolation!r}; choose from {', '.join(ISOLATIONS)}")

    def get_config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, where: str = "search") -> "SearchConfig":
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`)."""
        from .checks import checked

        return checked(cls, config, where)


def non_dominated(points) -> np.ndarray:
    """Indices of the non-dominated rows of ``points`` (every column minimized), with pymoo's sorting."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    points = np.asarray(points, np.float64)
    if len(points) == 0:
        return np.zeros(0, int)
    return np.sort(NonDominatedSorting().do(points, only_non_dominated_front=True))


def hypervolume(accuracy, cost, ref_accuracy: float, ref_cost: float) -> float:
    """Hypervolume (pymoo) of points ``(accuracy, cost)`` against the reference point: the area of the region they
    dominate with accuracy above ``ref_accuracy`` and cost below ``ref_cost``."""
    from pymoo.indicators.hv import HV

    pts = np.column_stack([-np.asarray(accuracy, np.float64), np.asarray(cost, np.float64)])
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=np.array([-ref_accuracy, ref_cost]))(pts))


@dataclass
class SearchResult:
    """``front``: the Pareto points sorted by cost; ``evaluated``: every architecture seen (``ok``, ``feasible``,
    ``predicted_accuracy``, ``metrics``, ``error``); ``reference``: the space's reference architecture's record."""

    scenario: dict
    objective: str
    front: list
    evaluated: list
    reference: dict | None
    stats: dict = field(default_factory=dict)

    @property
    def failed(self) -> list:
        return [r for r in self.evaluated if not r["ok"]]

    def front_archs(self) -> list:
        return [Architecture.parse(r["arch"]) for r in self.front]

    def to_dict(self) -> dict:
        from .measure_cache import _plain

        return _plain({"format": FORMAT, "scenario": self.scenario, "objective": self.objective,
                       "front": self.front, "reference": self.reference, "stats": self.stats,
                       "evaluated": self.evaluated})

    def save(self, path) -> Path:
        from tflite_export import atomic_write

        return atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "SearchResult":
        from .measure_cache import _unplain

        doc = _unplain(read_json(path, "search result"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a DONNA search result (format {FORMAT!r} expected)")
        return cls(doc["scenario"], doc["objective"], doc["front"], doc["evaluated"], doc.get("reference"),
                   doc.get("stats", {}))

    def plot(self, path, family: list | None = None, title: str | None = None) -> Path:
        """Accuracy against the objective: every feasible point, the front, the reference, and ``family``
        (``[{"label", "accuracy", <objective>}]``, e.g. the reference scaled by width and depth)."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from tflite_export import atomic_write

        obj = self.objective
        feas = [r for r in self.evaluated if r["ok"] and r["feasible"]]
        infeas = [r for r in self.evaluated if r["ok"] and not r["feasible"] and math.isfinite(r["metrics"][obj])]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        if infeas:
            ax.scatter([r["metrics"][obj] for r in infeas], [r["predicted_accuracy"] for r in infeas], s=10,
                       marker="x", c="0.75", label="over a limit")
        ax.scatter([r["metrics"][obj] for r in feas], [r["predicted_accuracy"] for r in feas], s=10, c="0.55",
                   label=f"evaluated ({len(self.evaluated)})")
        ax.step([r["metrics"][obj] for r in self.front], [r["predicted_accuracy"] for r in self.front], "o-",
                where="post", c="tab:red", ms=4, label=f"Pareto front ({len(self.front)})")
        if self.reference is not None and self.reference["ok"]:
            ax.scatter([self.reference["metrics"][obj]], [self.reference["predicted_accuracy"]], marker="*", s=160,
                       c="tab:blue", zorder=5, label="reference")
        if family:
            ax.plot([f[obj] for f in family], [f["accuracy"] for f in family], "s--", c="tab:green", ms=5,
                    label="reference family")
            for f in family:
                ax.annotate(f.get("label", ""), (f[obj], f["accuracy"]), fontsize=6, xytext=(3, -8),
                            textcoords="offset points")
        for k, lim in self.scenario.get("limits", {}).items():
            if k == obj:
                ax.axvline(lim, c="k", ls=":", lw=0.8, label=f"limit {lim:g}")
        ax.set_xlabel({"latency_us": "measured latency (µs, int8 LiteRT)", "flash_bytes": "flash (bytes)",
                       "ram_bytes": "tensor arena (bytes, host estimate)"}.get(obj, obj))
        ax.set_ylabel("predicted accuracy")
        ax.set_title(title or f"DONNA search: scenario {self.scenario.get('name')}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=120, format="png")
        plt.close(fig)
        return atomic_write(path, buf.getvalue())


def spread_along_front(result: "SearchResult", k: int) -> list:
    """``k`` front architectures (strings) spread evenly along the front, the cheapest and the most accurate
    included (all of them when the front is smaller)."""
    front = result.front
    if len(front) <= k:
        return [r["arch"] for r in front]
    idx = sorted(set(np.round(np.linspace(0, len(front) - 1, k)).astype(int).tolist()))
    return [front[i]["arch"] for i in idx]


def _make_problem(space, predictor, evaluator, scenario, archive, bar):
    from pymoo.core.problem import Problem

    choices = [space.block_choices(i) for i in range(len(space.blocks))]
    limits = list(scenario.limits.items())
    obj = scenario.objective

    class ArchProblem(Problem):
        def __init__(self):
            super().__init__(n_var=len(choices), n_obj=2, n_ieq_constr=len(limits) + 1, xl=0,
                             xu=np.array([len(c) - 1 for c in choices]), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            archs = [Architecture(tuple(choices[i][int(round(v))] for i, v in enumerate(row))) for row in X]
            todo = [a for a in dict.fromkeys(archs) if str(a) not in archive]
            if todo:
                accs = np.asarray(predictor.predict(todo), np.float64)
                costs = (evaluator.evaluate_many(todo) if hasattr(evaluator, "evaluate_many")
                         else [evaluator.evaluate(a) for a in todo])
                for a, acc, cost in zip(todo, accs, costs):
                    m = cost["metrics"]
                    ok = cost["ok"] and math.isfinite(float(m.get(obj, math.nan)))
                    archive[str(a)] = {"arch": str(a), "predicted_accuracy": float(acc), "ok": ok,
                                       "feasible": ok and scenario.feasible(m), "metrics": m,
                                       "error": cost["error"], "cached": cost["cached"],
                                       "order": len(archive)}
                    bar.update(1)
                    bar.set_postfix(measured=evaluator.n_measured, failed=evaluator.n_failed, refresh=False)
            F, G = [], []
            for a in archs:
                r = archive[str(a)]
                if not r["ok"]:
                    F.append([0.0, _BIG])
                    G.append([1.0] * len(limits) + [1.0])
                    continue
                F.append([-r["predicted_accuracy"], float(r["metrics"][obj])])
                viol = scenario.violations(r["metrics"])
                G.append([min(viol[k] / float(lim), _BIG) for k, lim in limits] + [-1.0])
            out["F"], out["G"] = np.array(F), np.array(G)

    return ArchProblem()


def search(space: SearchSpace, predictor, scenario, config: SearchConfig | None = None, cache=None,
           evaluator=None, verbose: int = 1) -> SearchResult:
    """Runs NSGA-II for ``scenario`` (a :class:`~keras_eff.donna.scenario.Scenario`) with ``predictor`` (anything
    with ``predict(archs) -> accuracies``; part 1's :class:`AccuracyPredictor`). Measurements go through ``cache``
    (a :class:`MeasurementCache`, in memory when None). The reference architecture is always evaluated."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.sampling import Sampling
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.optimize import minimize
    from pymoo.termination.collection import TerminationCollection
    from pymoo.termination.max_eval import MaximumFunctionCallTermination
    from pymoo.termination.max_time import TimeBasedTermination

    from .cost import CostEvaluator

    config = config or SearchConfig()
    own_evaluator = evaluator is None
    if own_evaluator:
        evaluator = CostEvaluator(space, scenario, cache, config.timeout_s, config.isolation, config.retry_failed,
                                  workers=config.workers)
    archive = {}
    t0 = time.perf_counter()
    pop = min(config.pop_size, space.size())
    first = [space.indices(space.reference())]
    first += [space.indices(a) for a in space.sample(min(pop, space.size()), seed=config.seed)
              if a != space.reference()][:pop - 1]

    class _Initial(Sampling):
        def _do(self, problem, n_samples, **kwargs):
            return np.array(first[:n_samples], dtype=float)

    algorithm = NSGA2(pop_size=pop, sampling=_Initial(),
                      crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      eliminate_duplicates=True)
    terms = [MaximumFunctionCallTermination(config.max_evals)]
    if config.max_time_s is not None:
        terms.append(TimeBasedTermination(config.max_time_s))
    with tqdm(total=config.max_evals, desc=f"search {scenario.name}", disable=not verbose) as bar:
        problem = _make_problem(space, predictor, evaluator, scenario, archive, bar)
        try:
            minimize(problem, algorithm, TerminationCollection(*terms), seed=config.seed, verbose=False)
        finally:
            if own_evaluator:
                evaluator.close()
    records = sorted(archive.values(), key=lambda r: r["order"])
    feas = [r for r in records if r["feasible"]]
    idx = non_dominated([[-r["predicted_accuracy"], r["metrics"][scenario.objective]] for r in feas])
    front = sorted((feas[i] for i in idx), key=lambda r: (r["metrics"][scenario.objective], -r["predicted_accuracy"]))
    for r in records:
        r["on_front"] = any(r is f for f in front)
    ref = archive.get(str(space.reference()))
    stats = {"evaluations": len(records), "measured": evaluator.n_measured, "failed": evaluator.n_failed,
             "feasible": len(feas), "cache_entries": len(evaluator.cache), "seconds": time.perf_counter() - t0,
             "search_config": config.get_config(), "space": space.name}
    if verbose:
        print(f"search {scenario.name!r}: {len(records)} architectures evaluated ({evaluator.n_measured} measured, "
              f"{evaluator.n_failed} failed, {len(feas)} within limits), {len(front)} on the Pareto front, "
              f"{stats['seconds']:.0f} s")
    return SearchResult(scenario.get_config(), scenario.objective, front, records, ref, stats)
