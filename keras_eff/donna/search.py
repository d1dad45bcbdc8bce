"""DONNA step C: NSGA-II (pymoo) over the block choices, predicted accuracy against measured cost.

Each decision variable is one block position's choice index. Objectives: maximize the predictor's accuracy,
minimize the scenario's measured objective (latency by default). Constraints: the scenario's limits (latency target,
flash and RAM budgets, TFLite Micro op support) and "the measurement succeeded". The search stops after
``max_evals`` evaluations or ``max_time_s`` seconds. The Pareto front is taken over every feasible architecture
evaluated (not only the last population), saved as JSON and drawn as a plot with the reference marked.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.optimize import minimize
from pymoo.termination.collection import TerminationCollection
from pymoo.termination.max_eval import MaximumFunctionCallTermination
from pymoo.termination.max_time import TimeBasedTermination
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from tqdm.auto import tqdm

from tflite_export.files import atomic_write, read_json

from .checks import checked
from .cost import CostEvaluator
from .guard import ISOLATIONS
from .measure_cache import _plain, _unplain
from .space import Architecture, SearchSpace

FORMAT = "keras_eff.donna.SearchResult"
_BIG = 1e12


@dataclass
class SearchConfig:
    """Options of :func:`search` (DONNA step C); the ``search`` section of a pipeline config.

    How long the defaults take: docs/donna.md ("Scenarios and the search").

    Attributes:
        pop_size: NSGA-II's population per generation, >= 2 (capped at the space's size).
        max_evals: Stop after this many evaluations (rounded up to the end of a generation), >= 2.
        max_time_s: Stop after this many seconds; None: no time cap.
        timeout_s: Deadline of one candidate's conversion and measurements, in seconds.
        isolation: ``"thread"`` or ``"process"``, as in `Guard`.
        retry_failed: Whether to measure again candidates whose cached measurement failed.
        workers: Processes that convert a generation's candidates to int8 concurrently (1: in the driver). The
            processes are spawned: a script must start its work under ``if __name__ == "__main__":``.
        seed: Seed of the first population and of NSGA-II.

    Raises:
        ValueError: If a field is out of range or ``isolation`` is unknown.

    Example:
        ```python
        config = SearchConfig(pop_size=16, max_evals=120, max_time_s=None, workers=2)
        ```
    """

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
            raise ValueError(
                f"SearchConfig.workers: {self.workers!r} must be an integer >= 1 (1: convert in the "
                f"driver, N: N conversion processes)"
            )
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"SearchConfig.max_time_s: {self.max_time_s} must be positive (or None for no cap)")
        if not self.timeout_s > 0:
            raise ValueError(f"SearchConfig.timeout_s: {self.timeout_s} must be positive")

        if self.isolation not in ISOLATIONS:
            raise ValueError(f"SearchConfig.isolation: {self.isolation!r}; choose from {', '.join(ISOLATIONS)}")

    def get_config(self) -> dict:
        """The options as a plain mapping.

        Returns:
            A dict of the fields, which :meth:`from_config` reads back.
        """
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, where: str = "search") -> SearchConfig:
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`).

        Args:
            config: A mapping of field names to values (a `SearchConfig` is returned as it is).
            where: The dotted name of the section, for error messages.

        Returns:
            A new `SearchConfig`.

        Raises:
            ValueError: If a key is unknown or a value has the wrong type or range (the message names it).
        """
        return checked(cls, config, where)


def non_dominated(points) -> np.ndarray:
    """The Pareto-optimal rows of a set of points, every column minimized (pymoo's non-dominated sorting).

    Args:
        points: An array-like ``(n, objectives)``.

    Returns:
        The sorted indices of the rows that no other row dominates (an empty int array for no points).

    Example:
        ```python
        non_dominated([[1, 5], [2, 2], [3, 3], [4, 1]])   # array([0, 1, 3]): [3, 3] is dominated by [2, 2]
        ```
    """
    points = np.asarray(points, np.float64)
    if len(points) == 0:
        return np.zeros(0, int)
    return np.sort(NonDominatedSorting().do(points, only_non_dominated_front=True))


def hypervolume(accuracy, cost, ref_accuracy: float, ref_cost: float) -> float:
    """The hypervolume (pymoo) of ``(accuracy, cost)`` points: the area they dominate beyond a reference point.

    Accuracy is maximized and cost minimized: the area of the region that the points dominate with accuracy above
    ``ref_accuracy`` and cost below ``ref_cost``. Larger is a better front.

    Args:
        accuracy: The points' accuracies.
        cost: The points' costs (e.g. latencies), in the same order.
        ref_accuracy: The reference point's accuracy (a lower bound).
        ref_cost: The reference point's cost (an upper bound).

    Returns:
        The area, in accuracy x cost units (0.0 for no points).

    Example:
        ```python
        hypervolume([0.8, 0.9], [2.0, 4.0], ref_accuracy=0.5, ref_cost=5.0)   # 0.3 * 3 + 0.1 * 1 = 1.0
        ```
    """
    pts = np.column_stack([-np.asarray(accuracy, np.float64), np.asarray(cost, np.float64)])
    if len(pts) == 0:
        return 0.0
    return float(HV(ref_point=np.array([-ref_accuracy, ref_cost]))(pts))


@dataclass
class SearchResult:
    """What :func:`search` returns: the Pareto front of one scenario and every architecture evaluated.

    A record is a dict: ``arch`` (its string), ``predicted_accuracy``, ``metrics``, ``ok`` (measured without
    error), ``feasible`` (within the limits), ``error``, ``cached``, ``order`` and ``on_front``.

    Attributes:
        scenario: The scenario's config.
        objective: The metric minimized against accuracy.
        front: The Pareto front's records, sorted by cost.
        evaluated: Every architecture's record, in evaluation order.
        reference: The space's reference architecture's record (None when it was not evaluated).
        stats: Counts and times: ``evaluations``, ``measured``, ``failed``, ``feasible``, ``cache_entries``,
            ``seconds``, ``search_config``, ``space``.

    Example:
        ```python
        result.save("pareto.json")
        result = SearchResult.load("pareto.json")
        result.plot("pareto.png")
        best = result.front_archs()[-1]     # the most accurate point of the front
        ```
    """

    scenario: dict
    objective: str
    front: list
    evaluated: list
    reference: dict | None
    stats: dict = field(default_factory=dict)

    @property
    def failed(self) -> list:
        """The records of the architectures whose measurement failed (with their ``error``)."""
        return [r for r in self.evaluated if not r["ok"]]

    def front_archs(self) -> list:
        """The front's architectures.

        Returns:
            A list of `Architecture`, sorted by cost.
        """
        return [Architecture.parse(r["arch"]) for r in self.front]

    def to_dict(self) -> dict:
        """The result as a JSON-serializable mapping (infinite values as ``"inf"``).

        Returns:
            The dict that :meth:`save` writes.
        """
        return _plain(
            {
                "format": FORMAT,
                "scenario": self.scenario,
                "objective": self.objective,
                "front": self.front,
                "reference": self.reference,
                "stats": self.stats,
                "evaluated": self.evaluated,
            }
        )

    def save(self, path) -> Path:
        """Writes the result as JSON, atomically.

        Args:
            path: The file.

        Returns:
            The path written.
        """
        return atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> SearchResult:
        """Reads a result that :meth:`save` wrote.

        Args:
            path: The JSON file.

        Returns:
            A new `SearchResult`.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is corrupt or not a search result.
        """
        doc = _unplain(read_json(path, "search result"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a DONNA search result (format {FORMAT!r} expected)")
        return cls(
            doc["scenario"],
            doc["objective"],
            doc["front"],
            doc["evaluated"],
            doc.get("reference"),
            doc.get("stats", {}),
        )

    def plot(self, path, family: list | None = None, title: str | None = None) -> Path:
        """Plots predicted accuracy against the objective and saves it as PNG, atomically.

        Every feasible point, those over a limit, the front, the reference (a star) and the objective's limit.

        Args:
            path: The PNG file.
            family: Extra points drawn as a line, ``[{"label", "accuracy", <objective>: value}]`` (e.g. the
                reference scaled by width and depth); None: none.
            title: The plot's title; default ``"DONNA search: scenario <name>"``.

        Returns:
            The path written.
        """
        matplotlib.use("Agg")

        obj = self.objective
        feas = [r for r in self.evaluated if r["ok"] and r["feasible"]]
        infeas = [r for r in self.evaluated if r["ok"] and not r["feasible"] and math.isfinite(r["metrics"][obj])]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        if infeas:
            ax.scatter(
                [r["metrics"][obj] for r in infeas],
                [r["predicted_accuracy"] for r in infeas],
                s=10,
                marker="x",
                c="0.75",
                label="over a limit",
            )
        ax.scatter(
            [r["metrics"][obj] for r in feas],
            [r["predicted_accuracy"] for r in feas],
            s=10,
            c="0.55",
            label=f"evaluated ({len(self.evaluated)})",
        )
        ax.step(
            [r["metrics"][obj] for r in self.front],
            [r["predicted_accuracy"] for r in self.front],
            "o-",
            where="post",
            c="tab:red",
            ms=4,
            label=f"Pareto front ({len(self.front)})",
        )
        if self.reference is not None and self.reference["ok"]:
            ax.scatter(
                [self.reference["metrics"][obj]],
                [self.reference["predicted_accuracy"]],
                marker="*",
                s=160,
                c="tab:blue",
                zorder=5,
                label="reference",
            )
        if family:
            ax.plot(
                [f[obj] for f in family],
                [f["accuracy"] for f in family],
                "s--",
                c="tab:green",
                ms=5,
                label="reference family",
            )
            for f in family:
                ax.annotate(
                    f.get("label", ""), (f[obj], f["accuracy"]), fontsize=6, xytext=(3, -8), textcoords="offset points"
                )
        for k, lim in self.scenario.get("limits", {}).items():
            if k == obj:
                ax.axvline(lim, c="k", ls=":", lw=0.8, label=f"limit {lim:g}")
        ax.set_xlabel(
            {
                "latency_us": "measured latency (µs, int8 LiteRT)",
                "flash_bytes": "flash (bytes)",
                "ram_bytes": "tensor arena (bytes, host estimate)",
            }.get(obj, obj)
        )
        ax.set_ylabel("predicted accuracy")
        ax.set_title(title or f"DONNA search: scenario {self.scenario.get('name')}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=120, format="png")
        plt.close(fig)
        return atomic_write(path, buf.getvalue())


def spread_along_front(result: SearchResult, k: int) -> list:
    """``k`` front architectures (strings) spread evenly along the front, the cheapest and the most accurate
    included (all of them when the front is smaller)."""
    front = result.front
    if len(front) <= k:
        return [r["arch"] for r in front]
    idx = sorted(set(np.round(np.linspace(0, len(front) - 1, k)).astype(int).tolist()))
    return [front[i]["arch"] for i in idx]


def _make_problem(space, predictor, evaluator, scenario, archive, bar):
    choices = [space.block_choices(i) for i in range(len(space.blocks))]
    limits = list(scenario.limits.items())
    obj = scenario.objective

    class ArchProblem(Problem):
        def __init__(self):
            super().__init__(
                n_var=len(choices),
                n_obj=2,
                n_ieq_constr=len(limits) + 1,
                xl=0,
                xu=np.array([len(c) - 1 for c in choices]),
                vtype=int,
            )

        def _evaluate(self, X, out, *args, **kwargs):
            archs = [Architecture(tuple(choices[i][int(round(v))] for i, v in enumerate(row))) for row in X]
            todo = [a for a in dict.fromkeys(archs) if str(a) not in archive]
            if todo:
                accs = np.asarray(predictor.predict(todo), np.float64)
                costs = (
                    evaluator.evaluate_many(todo)
                    if hasattr(evaluator, "evaluate_many")
                    else [evaluator.evaluate(a) for a in todo]
                )
                for a, acc, cost in zip(todo, accs, costs):
                    m = cost["metrics"]
                    ok = cost["ok"] and math.isfinite(float(m.get(obj, math.nan)))
                    archive[str(a)] = {
                        "arch": str(a),
                        "predicted_accuracy": float(acc),
                        "ok": ok,
                        "feasible": ok and scenario.feasible(m),
                        "metrics": m,
                        "error": cost["error"],
                        "cached": cost["cached"],
                        "order": len(archive),
                    }
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


def search(
    space: SearchSpace,
    predictor,
    scenario,
    config: SearchConfig | None = None,
    cache=None,
    evaluator=None,
    verbose: int = 1,
) -> SearchResult:
    """DONNA step C: NSGA-II over the block choices, predicted accuracy against measured cost, for one scenario.

    Each decision variable is one block's choice index. Objectives: maximize the predicted accuracy, minimize the
    scenario's measured objective; constraints: the scenario's limits and "the measurement succeeded". Every
    candidate is converted to int8 and measured (:class:`CostEvaluator`) unless ``cache`` has it; a failed
    measurement makes the candidate infeasible and the search goes on. The first population holds the reference
    architecture. The search stops after ``max_evals`` evaluations or ``max_time_s`` seconds; the front is taken
    over every feasible architecture evaluated.

    Args:
        space: The `SearchSpace`.
        predictor: Anything with ``predict(archs) -> accuracies``, e.g. a fitted `AccuracyPredictor`.
        scenario: The `Scenario`.
        config: Search options; None: ``SearchConfig()``.
        cache: A `MeasurementCache` (new entries are added to it); None: a new one in memory.
        evaluator: A `CostEvaluator` to use instead of making one (then ``cache`` and the config's measuring
            options are not used, and it is not closed).
        verbose: 0: no progress bar or summary line.

    Returns:
        A `SearchResult`.

    Raises:
        ValueError: If the predictor refuses the space's architectures.

    Example:
        ```python
        predictor = AccuracyPredictor.load("artifacts/donna/predictor.json")
        scenario = Scenario("litert_2threads", [{"kind": "litert", "num_threads": 2}], limits={"latency_us": 300})
        result = search(tiny_space(), predictor, scenario, SearchConfig(max_evals=120),
                        cache=MeasurementCache("artifacts/donna/measurements.json"))
        result.front   # [{"arch", "predicted_accuracy", "metrics": {...}, ...}], sorted by cost
        ```
    """
    config = config or SearchConfig()
    own_evaluator = evaluator is None
    if own_evaluator:
        evaluator = CostEvaluator(
            space, scenario, cache, config.timeout_s, config.isolation, config.retry_failed, workers=config.workers
        )
    archive: dict[str, dict] = {}
    t0 = time.perf_counter()
    pop = min(config.pop_size, space.size())
    first = [space.indices(space.reference())]
    first += [
        space.indices(a) for a in space.sample(min(pop, space.size()), seed=config.seed) if a != space.reference()
    ][: pop - 1]

    class _Initial(Sampling):
        def _do(self, problem, n_samples, **kwargs):
            return np.array(first[:n_samples], dtype=float)

    algorithm = NSGA2(
        pop_size=pop,
        sampling=_Initial(),
        crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
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
    stats = {
        "evaluations": len(records),
        "measured": evaluator.n_measured,
        "failed": evaluator.n_failed,
        "feasible": len(feas),
        "cache_entries": len(evaluator.cache),
        "seconds": time.perf_counter() - t0,
        "search_config": config.get_config(),
        "space": space.name,
    }
    if verbose:
        print(
            f"search {scenario.name!r}: {len(records)} architectures evaluated ({evaluator.n_measured} measured, "
            f"{evaluator.n_failed} failed, {len(feas)} within limits), {len(front)} on the Pareto front, "
            f"{stats['seconds']:.0f} s"
        )
    return SearchResult(scenario.get_config(), scenario.objective, front, records, ref, stats)
