"""The 5-block space for 32-96 px inputs (``rgb_space``): int8 LiteRT latency (one thread) of its smallest, largest
(depthwise, fused, grouped) and random architectures, each measured in independent rounds (run-to-run spread), and
evaluations per minute of the search's cost evaluation, one at a time against a process pool converting concurrently.

    python -m benchmarks.donna_space_latency [--quick]

Writes benchmarks/results/donna_space_latency{_quick}.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tflite_export.files import atomic_write

RESULTS = Path(__file__).parent / "results"


CELL_INPUT, CELL_OUT = (16, 16, 48), 64


def cell_latencies(rounds: int, runs: int) -> list:
    """int8 latency of one layer of each cell (and of gr_ib at group widths 4, 8, 16), stride 1 and 2."""
    import keras

    from keras_eff.compression import count_macs
    from keras_eff.donna import BlockChoice, build_block
    from tflite_export import TFLiteModel, to_tflite

    out = []
    for stride in (1, 2):
        for cell, g in (("dw_ib", 8), ("gr_ib", 4), ("gr_ib", 8), ("gr_ib", 16), ("fused_ib", 8)):
            keras.utils.set_random_seed(0)
            block = build_block(BlockChoice(cell, 3, 3, 1), CELL_INPUT, CELL_OUT, stride, group_width=g)
            rep = np.random.default_rng(0).random((16, *CELL_INPUT), dtype=np.float32)
            data = to_tflite(block, rep, batch_size=1)
            med = [
                TFLiteModel(data, num_threads=1).latency(runs=runs, warmup=20, seed=r).median_us for r in range(rounds)
            ]
            m = float(np.median(med))
            out.append(
                {
                    "stride": stride,
                    "cell": cell,
                    "group_width": g,
                    "latency_us": m,
                    "spread": (max(med) - min(med)) / m,
                    "macs": int(count_macs(block).total_macs),
                }
            )
            print(f"stride {stride} {cell} g={g}: {m:.1f} us", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer architectures and runs")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    import keras

    from keras_eff.donna import Architecture, CostEvaluator, MeasurementCache, Scenario, rgb_space
    from keras_eff.donna.measurers import int8_model
    from keras_eff.donna.space import BlockChoice
    from tflite_export import TFLiteModel

    space = rgb_space(args.size)
    n_random, rounds, runs = (4, 3, 100) if args.quick else (10, 5, 200)
    smallest = Architecture(tuple(BlockChoice("dw_ib", 3, 2, 1, False, "relu", 0.5) for _ in space.blocks))
    fused = Architecture(tuple(BlockChoice("fused_ib", 5, 4, 2, True, "relu", 1.0) for _ in space.blocks))
    grouped = Architecture(tuple(BlockChoice("gr_ib", 5, 4, 2, True, "relu", 1.0) for _ in space.blocks))
    archs = [
        ("smallest", smallest),
        ("largest depthwise (reference)", space.reference()),
        ("largest fused", fused),
        ("largest grouped", grouped),
    ]
    archs += [(f"random {i}", a) for i, a in enumerate(space.sample(n_random, seed=7))]
    rows = []
    for label, arch in archs:
        t0 = time.perf_counter()
        data = int8_model(space, arch)
        conv = time.perf_counter() - t0
        # independent rounds: a fresh interpreter each, as separate measurements of the same file would be
        med = [TFLiteModel(data, num_threads=1).latency(runs=runs, warmup=20, seed=r).median_us for r in range(rounds)]
        m = float(np.median(med))
        rows.append(
            {
                "label": label,
                "arch": str(arch),
                "latency_us": m,
                "rounds_us": med,
                "spread": (max(med) - min(med)) / m,
                "bytes": len(data),
                "convert_s": conv,
            }
        )
        print(
            f"{label:>30}: {m:8.1f} us  spread {rows[-1]['spread']:.1%}  {len(data) / 1024:.0f} KB  "
            f"convert {conv:.1f} s",
            flush=True,
        )
    cells = cell_latencies(rounds, runs)
    # evaluations per minute: sequential vs 2 conversion processes (fresh caches; the pool's start-up included)
    evals = space.sample(4 if args.quick else 8, seed=11)
    scenario = Scenario(name="litert_1thread", measurers=[{"kind": "litert", "runs": 50, "rounds": 1}])
    rate = {}
    for workers in (1, 2):
        ev = CostEvaluator(space, scenario, MeasurementCache(), timeout_s=300, workers=workers)
        t0 = time.perf_counter()
        res = ev.evaluate_many(evals)
        dt = time.perf_counter() - t0
        ev.close()
        assert all(r["ok"] for r in res), [r["error"] for r in res]
        rate[workers] = {"seconds": dt, "evals_per_min": 60 * len(evals) / dt}
        print(f"workers={workers}: {len(evals)} evaluations in {dt:.0f} s ({rate[workers]['evals_per_min']:.1f}/min)")
    lat = [r["latency_us"] for r in rows]
    doc = {
        "space": space.get_config()["name"],
        "input": list(space.input_shape),
        "rows": rows,
        "cells": cells,
        "rate": rate,
        "quick": args.quick,
        "rounds": rounds,
        "runs_per_round": runs,
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "keras": keras.__version__,
    }
    name = "donna_space_latency" + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    atomic_write(RESULTS / f"{name}.json", json.dumps(doc, indent=1) + "\n")
    lines = [
        f"# DONNA 5-block space `{doc['space']}` ({'x'.join(map(str, space.input_shape))}): int8 latency",
        "",
        (
            f"Generated by `python -m benchmarks.donna_space_latency{' --quick' if args.quick else ''}` on "
            f"{doc['date']} ({platform.machine()}, 2 shared CPU cores, other jobs running; "
            f"keras {keras.__version__}). LiteRT, one thread, XNNPACK, batch 1; median of {runs} runs per "
            f"round, {rounds} independent rounds (a fresh interpreter each); spread = (max - min) / median of "
            "the rounds' medians."
        ),
        "",
        "| architecture | latency (µs) | run-to-run spread | int8 file | conversion |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['latency_us']:.0f} | {r['spread']:.1%} | {r['bytes'] / 1024:.0f} KB | "
            f"{r['convert_s']:.1f} s |"
        )
    lines += [
        "",
        (
            f"Range: {min(lat) / 1000:.3f}–{max(lat) / 1000:.3f} ms; largest spread "
            f"{max(r['spread'] for r in rows):.1%}."
        ),
        "",
        "## One block, each cell",
        "",
        (
            f"One layer, kernel 3, expansion 3, no SE, on a {CELL_INPUT[0]}x{CELL_INPUT[1]}x{CELL_INPUT[2]} input "
            f"to {CELL_OUT} channels ({CELL_INPUT[2] * 3} expanded); int8, same runtime and rounds as above; MACs "
            f"from `keras_eff.compression.count_macs`."
        ),
        "",
        "| stride | cell | group width | latency (µs) | spread | MACs |",
        "|---|---|---|---|---|---|",
    ]
    for r in cells:
        lines.append(
            f"| {r['stride']} | {r['cell']} | {r['group_width'] if r['cell'] == 'gr_ib' else '-'} | "
            f"{r['latency_us']:.1f} | {r['spread']:.1%} | {r['macs']:,} |"
        )
    lines += [
        "",
        "## Cost evaluation: one at a time vs a process pool",
        "",
        (
            f"{len(evals)} random architectures, fresh caches, LiteRT measured in the driver one candidate at a "
            "time; the pool (2 processes) converts concurrently; its start-up (TensorFlow import per process) is "
            "included. On 2 cores shared with other jobs the gain is bounded by the cores."
        ),
        "",
        "| workers | seconds | evaluations per minute |",
        "|---|---|---|",
    ]
    for w, r in rate.items():
        lines.append(f"| {w} | {r['seconds']:.0f} | {r['evals_per_min']:.1f} |")
    gain = rate[2]["evals_per_min"] / rate[1]["evals_per_min"]
    lines += [
        "",
        f"Parallel / sequential: {gain:.2f}x"
        + (" (slower: at this scale the pool's start-up outweighs the overlap)" if gain < 1 else "")
        + ".",
    ]
    atomic_write(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
