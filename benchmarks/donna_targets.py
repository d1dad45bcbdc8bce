"""One DONNA search space, three deployment targets: do their Pareto fronts hold the same architectures?

    python -m benchmarks.donna_targets            # tiny space, 96 evaluations per target (~25 min on 2 cores)
    python -m benchmarks.donna_targets --quick    # tiny space, 32 evaluations per target (~10 min)

The accuracy model (reference, block library, ridge predictor) is built once with the built-in ``tiny`` pipeline
config and shared; NSGA-II then searches the same space for each target with its own measured cost:

- ``host``: int8 LiteRT latency on this machine's CPU (1 thread), the objective;
- ``mcu``: the microcontroller budget: the TFLite Micro tensor arena (RAM, the objective) with a flash limit of
  256 KiB and every op one TFLite Micro has;
- ``npu``: Arm Ethos-U55-128 as Vela compiles for it: Vela's inference time (the objective), every op on the NPU.

Reported: each front, how many architectures two fronts or all three share, and one plot with the three fronts
(predicted accuracy against each target's own cost). Results: benchmarks/results/donna_targets{,_quick}.{md,json,png};
the pipeline's files (accuracy model, searches, measurement cache) stay in ``..._artifacts/`` (not committed).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tflite_export.files import atomic_savefig

RESULTS = os.path.join(os.path.dirname(__file__), "results")

TARGETS = {
    "host": {
        "measurers": [{"kind": "litert", "num_threads": 1, "runs": 50, "rounds": 3}],
        "objective": "latency_us",
        "label": "LiteRT latency on the host CPU (µs)",
    },
    "mcu": {
        "measurers": [{"kind": "micro"}],
        "objective": "ram_bytes",
        "limits": {"flash_bytes": 262144},
        "label": "TFLite Micro tensor arena (bytes)",
    },
    "npu": {
        "measurers": [{"kind": "ethos_u", "accelerator": "ethos-u55-128"}],
        "objective": "latency_us",
        "label": "Ethos-U55-128 inference time, Vela (µs)",
    },
}


def run(max_evals: int, pop_size: int, stem: str, seed: int = 0):
    from keras_eff.donna import DonnaPipeline, Scenario, SearchConfig, builtin_config
    from keras_eff.reporting import write_results

    start = time.time()
    config = builtin_config("tiny")
    config["seed"] = seed
    pipe = DonnaPipeline(config, stem + "_artifacts")
    pipe.build_accuracy_model()
    search_config = SearchConfig(pop_size=pop_size, max_evals=max_evals, max_time_s=3600.0, timeout_s=120.0, seed=seed)
    results, scenarios = {}, {}
    for name, t in TARGETS.items():
        scenarios[name] = Scenario(name, t["measurers"], objective=t["objective"], limits=t.get("limits", {}))
        print(f"[{time.time() - start:4.0f} s] searching for {name}", flush=True)
        results[name] = pipe.search_scenario(scenarios[name], search_config)
    fronts = {name: [r["arch"] for r in res.front] for name, res in results.items()}
    rows = []
    for name, res in results.items():
        obj = res.objective
        rows.append(
            {
                "target": name,
                "objective": obj,
                "evaluated": len(res.evaluated),
                "feasible": sum(1 for r in res.evaluated if r["ok"] and r["feasible"]),
                "front size": len(res.front),
                "front cost range": f"{res.front[0]['metrics'][obj]:,.4g} – {res.front[-1]['metrics'][obj]:,.4g}"
                if res.front
                else "–",
                "best predicted acc": round(max((r["predicted_accuracy"] for r in res.front), default=float("nan")), 4),
            }
        )
    shared = {}
    for a, b in itertools.combinations(fronts, 2):
        shared[f"{a} ∩ {b}"] = sorted(set(fronts[a]) & set(fronts[b]))
    shared["all three"] = sorted(set.intersection(*(set(f) for f in fronts.values())))
    shared_rows = [
        {
            "fronts": k,
            "shared architectures": len(v),
            "of": " / ".join(str(len(fronts[n])) for n in k.split(" ∩ "))
            if "∩" in k
            else " / ".join(str(len(f)) for f in fronts.values()),
        }
        for k, v in shared.items()
    ]
    _plot(results, shared["all three"], stem + ".png")
    from keras_eff.reporting import markdown_table

    notes = (
        "Shared architectures between fronts:\n\n"
        + markdown_table(shared_rows)
        + f"\nSpace `{pipe.space.name}`, accuracy model from the built-in `tiny` pipeline config (seed {seed}); "
        f"NSGA-II with population {pop_size} and {max_evals} evaluations per target. Each front holds the "
        f"architectures no other evaluated one beats on both predicted accuracy and that target's cost. "
        f"Front architectures per target:\n\n"
        + "\n".join(f"- **{n}**: " + ", ".join(f"`{a}`" for a in f) for n, f in fronts.items())
        + f"\n\nRun time {time.time() - start:.0f} s (measurements cached in the artifacts folder)."
    )
    table = write_results(
        stem,
        "DONNA: one space, three targets (host CPU, microcontroller, Ethos-U55)",
        rows,
        notes=notes,
        extra={
            "fronts": fronts,
            "shared": shared,
            "scenarios": {n: s.get_config() for n, s in scenarios.items()},
            "search_config": search_config.get_config(),
        },
    )
    print(table)
    print(markdown_table(shared_rows))
    return results, shared


def _plot(results, on_all, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results))
    for ax, (name, res) in zip(axes, results.items()):
        obj = res.objective
        feas = [r for r in res.evaluated if r["ok"] and r["feasible"]]
        ax.scatter(
            [r["metrics"][obj] for r in feas],
            [r["predicted_accuracy"] for r in feas],
            s=10,
            c="0.6",
            label="evaluated, within limits",
        )
        ax.step(
            [r["metrics"][obj] for r in res.front],
            [r["predicted_accuracy"] for r in res.front],
            "o-",
            where="post",
            c="tab:red",
            ms=4,
            label=f"front ({len(res.front)})",
        )
        common = [r for r in res.front if r["arch"] in on_all]
        if common:
            ax.scatter(
                [r["metrics"][obj] for r in common],
                [r["predicted_accuracy"] for r in common],
                s=90,
                facecolors="none",
                edgecolors="tab:blue",
                linewidths=1.5,
                label="on all three fronts",
            )
        ax.set_title(name)
        ax.set_xlabel(TARGETS[name]["label"])
        ax.set_ylabel("predicted accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer evaluations per target")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    if args.quick:
        run(32, 8, os.path.join(RESULTS, "donna_targets_quick"), args.seed)
    else:
        run(96, 16, os.path.join(RESULTS, "donna_targets"), args.seed)


if __name__ == "__main__":
    main()
