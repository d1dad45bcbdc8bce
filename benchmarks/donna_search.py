"""DONNA search on Fashion-MNIST: the finetuned Pareto front against the reference family scaled by width and depth.

    python -m benchmarks.donna_search            # default space (hours on 2 cores)
    python -m benchmarks.donna_search --quick    # tiny space (about 20-40 minutes on a shared 2-core machine)

1. The accuracy model (part 1): reference, BKD block library, predictor.
2. NSGA-II over the space with int8 LiteRT latency measured on this machine (1 thread) and predicted accuracy.
3. ``k`` architectures spread along the front, finetuned from the block library with soft distillation from the
   reference's logits, and the same architectures trained from scratch (same loss, same epochs).
4. The reference family: the reference architecture with its channels scaled by width and its blocks' depth scaled,
   trained from scratch with the same loss and epochs.
Every model is converted to full int8 (``tflite_export.to_tflite``); accuracy is the int8 model's on the test
images, latency the same ``LiteRTLatency`` measurer for all, in interleaved rounds. Two seeds for every training.
Reported: latency at equal accuracy and accuracy at equal latency at each family point, the hypervolume of each
front, and library vs scratch initialization.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny space and short runs")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of every compared model")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--eval-samples", type=int, default=None)
    p.add_argument("--k", type=int, default=None, help="front architectures finetuned")
    p.add_argument("--max-evals", type=int, default=None, help="search evaluation cap")
    p.add_argument("--widths", default=None, help="reference family widths, comma-separated")
    p.add_argument("--latency-rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/donna_search")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def scaled_space(space, width: float):
    """``space`` with every channel count scaled by ``width`` (at least 4)."""
    from keras_eff.donna import SearchSpace

    def w(c):
        return max(4, int(round(c * width)))

    cfg = space.get_config()
    cfg.update(
        stem_channels=w(cfg["stem_channels"]), head_channels=w(cfg["head_channels"]), name=f"{space.name}_w{width:g}"
    )
    cfg["blocks"] = [{**b, "out_channels": w(b["out_channels"])} for b in cfg["blocks"]]
    return SearchSpace.from_config(cfg)


def family(space, widths):
    """(label, space, architecture): the reference's choices with the depth set to each allowed depth, per width."""
    from dataclasses import replace

    from keras_eff.donna import Architecture

    ref = space.reference()
    depths = sorted(set.intersection(*[set(b.depths) for b in space.blocks]))
    out = []
    for wd in widths:
        sp = scaled_space(space, wd)
        for d in depths:
            arch = Architecture(tuple(replace(c, depth=d) for c in ref.choices))
            out.append((f"w{wd:g} d{d}", sp, arch))
    return out


def int8_accuracy(space, result, x_rep, x_eval, y_eval):
    from keras_eff.donna.distill import model_from_result
    from tflite_export import TFLiteModel, to_tflite

    model = model_from_result(space, result)
    data = to_tflite(model, x_rep)
    pred = TFLiteModel(data).predict(x_eval).argmax(axis=1)
    return float(np.mean(pred == y_eval)), data


def measure_latencies(files: dict, rounds: int) -> dict:
    """The same LiteRTLatency measurer for every file, ``rounds`` interleaved rounds, median per file."""
    from keras_eff.donna import LiteRTLatency

    m = LiteRTLatency(num_threads=1, runs=100, warmup=20, rounds=1)
    times = {k: [] for k in files}
    for _ in range(rounds):
        for k, data in files.items():
            times[k].append(m.measure(data)["latency_us"])
    return {k: float(np.median(v)) for k, v in times.items()}


def front_of(points):
    """Non-dominated (accuracy up, latency down) subset of ``[{"accuracy", "latency_us", ...}]``, by latency."""
    from keras_eff.donna import non_dominated

    idx = non_dominated([[-p["accuracy"], p["latency_us"]] for p in points])
    return sorted((points[i] for i in idx), key=lambda p: p["latency_us"])


def compare_at_points(donna, fam):
    """At each family point: the cheapest DONNA point at least as accurate, and the most accurate one at most as
    slow. Points carry ``accuracy`` (mean of the seeds), ``spread`` (|seed 0 - seed 1|) and ``latency_us``."""
    rows = []
    for f in sorted(fam, key=lambda p: p["latency_us"]):
        eq_acc = [d for d in donna if d["accuracy"] >= f["accuracy"]]
        eq_lat = [d for d in donna if d["latency_us"] <= f["latency_us"]]
        row = {"family point": f["label"], "family acc": f["accuracy"], "family lat (us)": f["latency_us"]}
        if eq_acc:
            d = min(eq_acc, key=lambda p: p["latency_us"])
            row["DONNA lat at >= acc (us)"] = d["latency_us"]
            row["latency saved"] = 1 - d["latency_us"] / f["latency_us"]
            row["win (>=20% faster)"] = (
                row["latency saved"] >= 0.2 and d["accuracy"] - f["accuracy"] >= 0
            )  # as accurate on the mean of the seeds
        if eq_lat:
            d = max(eq_lat, key=lambda p: p["accuracy"])
            row["DONNA acc at <= lat"] = d["accuracy"]
            row["acc gained"] = d["accuracy"] - f["accuracy"]
            row["seed spread"] = max(d["spread"], f["spread"])
            row["win (acc beyond spread)"] = row["acc gained"] > row["seed spread"]
        row["win"] = bool(row.get("win (>=20% faster)") or row.get("win (acc beyond spread)"))
        rows.append(row)
    return rows


def plot(path, donna_pts, scratch_pts, fam_pts, search_front, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tflite_export.files import atomic_savefig

    fig, ax = plt.subplots(figsize=(6.5, 4.8))

    def draw(pts, style, label, **kw):
        pts = sorted(pts, key=lambda p: p["latency_us"])
        ax.errorbar(
            [p["latency_us"] for p in pts],
            [p["accuracy"] for p in pts],
            yerr=[p["spread"] / 2 for p in pts],
            fmt=style,
            capsize=2,
            label=label,
            **kw,
        )

    draw(donna_pts, "o-", "DONNA front, finetuned from the library (int8)", c="tab:red")
    draw(scratch_pts, "o:", "same architectures from scratch", c="tab:orange", mfc="none")
    draw(fam_pts, "s--", "reference family (width x depth, from scratch)", c="tab:green")
    for p in fam_pts:
        ax.annotate(
            p["label"], (p["latency_us"], p["accuracy"]), fontsize=6, xytext=(3, -9), textcoords="offset points"
        )
    ax.set_xlabel("measured latency, int8 LiteRT, 1 thread (µs, median)")
    ax.set_ylabel("int8 test accuracy (mean of 2 seeds, bars: seed range)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = atomic_savefig(fig, path, dpi=120, format="png")
    plt.close(fig)
    return path


def main(argv=None):
    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.donna import (
        BKDConfig,
        DistillConfig,
        DonnaConfig,
        FinetuneConfig,
        Scenario,
        SearchConfig,
        build_accuracy_model,
        default_space,
        distill_architectures,
        distill_job,
        hypervolume,
        search,
        tiny_space,
    )
    from keras_eff.donna.search import spread_along_front
    from keras_eff.reporting import write_results

    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.quick:
        space, cfg = tiny_space(), DonnaConfig.quick()
        d = dict(epochs=5, train_samples=8000, eval_samples=2000, k=5, max_evals=64, widths="0.5,0.75,1")
        pop = 16
    else:
        space = default_space()
        cfg = DonnaConfig(
            reference_epochs=3,
            bkd=BKDConfig(steps=500, calibration_samples=500, compile=False),
            bkd_samples=8000,
            val_samples=1000,
            n_archs=20,
            finetune=FinetuneConfig(steps=60),
            finetune_samples=20000,
        )
        d = dict(epochs=5, train_samples=20000, eval_samples=5000, k=6, max_evals=240, widths="0.5,0.75,1")
        pop = 24
    o = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in d.items()}
    widths = [float(w) for w in str(o["widths"]).split(",")]
    cfg.seed = args.seed
    seeds = (args.seed, args.seed + 1)
    seconds = {}

    (x_train, y_train), (x_test, y_test) = fashion_mnist_float()
    x_tr, y_tr = x_train[: o["train_samples"]], y_train[: o["train_samples"]]
    x_ev, y_ev = x_test[: o["eval_samples"]], y_test[: o["eval_samples"]]
    x_rep = x_tr[:256]

    # 1. accuracy model
    t0 = time.perf_counter()
    am = build_accuracy_model(space, x_tr, y_tr, x_ev, y_ev, cfg, verbose=1)
    seconds["accuracy model"] = time.perf_counter() - t0

    # 2. search with measured latency
    t0 = time.perf_counter()
    scenario = Scenario("litert_1thread", [{"kind": "litert", "num_threads": 1, "runs": 100, "rounds": 3}])
    out = Path(args.out + ("_quick" if args.quick else ""))
    from keras_eff.donna import MeasurementCache

    # host-specific measurements: kept out of the results folder, reused by a rerun on the same machine
    cache = MeasurementCache(Path("artifacts") / f"{out.name}_measurements.json")
    sres = search(
        space, am.predictor, scenario, SearchConfig(pop_size=pop, max_evals=o["max_evals"], seed=args.seed), cache=cache
    )
    sres.save(str(out) + "_pareto.json")
    sres.plot(str(out) + "_search.png")
    seconds["search"] = time.perf_counter() - t0

    # 3. chosen front architectures: library init vs scratch, two seeds, soft distillation from the reference
    chosen = spread_along_front(sres, o["k"])
    dcfg = DistillConfig(epochs=o["epochs"])
    teacher = am.reference.predict(x_tr, batch_size=512, verbose=0)
    t0 = time.perf_counter()
    runs = {}
    for init in ("library", "scratch"):
        for s in seeds:
            runs[(init, s)] = distill_architectures(
                am.library,
                am.reference,
                chosen,
                x_tr,
                y_tr,
                x_ev,
                y_ev,
                dcfg,
                init=init,
                seed=s,
                teacher_logits=teacher,
                desc=f"seed {s}",
            )
    seconds["finetune front (library + scratch, 2 seeds)"] = time.perf_counter() - t0

    # 4. the reference family from scratch, same loss and epochs
    t0 = time.perf_counter()
    fam = family(space, widths)
    fam_runs = {}
    for s in seeds:
        for label, sp, arch in fam:
            job = {
                "space": sp.get_config(),
                "arch": str(arch),
                "weights": None,
                "x": x_tr,
                "y": y_tr,
                "teacher": teacher,
                "x_eval": x_ev,
                "y_eval": y_ev,
                "config": dcfg.get_config(),
                "seed": s,
                "init": "scratch",
            }
            fam_runs[(label, s)] = distill_job(job)
            print(f"family {label} seed {s}: float accuracy {fam_runs[(label, s)]['accuracy']:.4f}")
    seconds["train family (2 seeds)"] = time.perf_counter() - t0

    # int8 accuracy of every model; latency of one int8 file per architecture, interleaved rounds
    t0 = time.perf_counter()
    files, acc8 = {}, {}
    for (init, s), results in runs.items():
        for r in results:
            acc8[(init, r["arch"], s)], data = int8_accuracy(space, r, x_rep, x_ev, y_ev)
            files.setdefault(("donna", r["arch"]), data)
    for (label, s), r in fam_runs.items():
        sp = next(f[1] for f in fam if f[0] == label)
        acc8[("family", label, s)], data = int8_accuracy(sp, r, x_rep, x_ev, y_ev)
        files.setdefault(("family", label), data)
    lat = measure_latencies(files, args.latency_rounds)
    seconds["int8 conversion + latency"] = time.perf_counter() - t0

    def point(kind, key, label):
        a = [acc8[(kind, key, s)] for s in seeds]
        src = "donna" if kind in ("library", "scratch") else "family"
        return {
            "label": label,
            "accuracy": float(np.mean(a)),
            "spread": float(abs(a[0] - a[1])),
            "seeds": a,
            "latency_us": lat[(src, key)],
        }

    donna_pts = [point("library", a, f"D{i}") for i, a in enumerate(chosen)]
    scratch_pts = [point("scratch", a, f"D{i}") for i, a in enumerate(chosen)]
    fam_pts = [point("family", f[0], f[0]) for f in fam]
    for p, a in zip(donna_pts, chosen):
        p["arch"] = a
    donna_front, fam_front = front_of(donna_pts), front_of(fam_pts)

    comp = compare_at_points(donna_front, fam_front)
    wins = sum(r["win"] for r in comp)
    all_pts = donna_pts + fam_pts + scratch_pts
    ref_acc = min(p["accuracy"] for p in all_pts) - 0.01
    ref_lat = max(p["latency_us"] for p in all_pts) * 1.05
    hv = {}
    for name, pts_by_seed in (
        ("DONNA", [[(acc8[("library", a, s)], lat[("donna", a)]) for a in chosen] for s in seeds]),
        ("family", [[(acc8[("family", f[0], s)], lat[("family", f[0])]) for f in fam] for s in seeds]),
    ):
        vals = [hypervolume([p[0] for p in pts], [p[1] for p in pts], ref_acc, ref_lat) for pts in pts_by_seed]
        hv[name] = {"seeds": vals, "mean": float(np.mean(vals))}
    lib_minus_scratch = [acc8[("library", a, s)] - acc8[("scratch", a, s)] for a in chosen for s in seeds]

    title = f"DONNA vs reference family, {space.name} space, Fashion-MNIST, {o['epochs']} epochs, int8, seeds {seeds}"
    plot(str(out) + ".png", donna_pts, scratch_pts, fam_pts, sres.front, title)

    rows = comp + [
        {
            "family point": "hypervolume DONNA (mean of seeds)",
            "family acc": hv["DONNA"]["mean"],
            "family lat (us)": None,
            "win": hv["DONNA"]["mean"] > hv["family"]["mean"],
        },
        {
            "family point": "hypervolume family (mean of seeds)",
            "family acc": hv["family"]["mean"],
            "family lat (us)": None,
        },
        {
            "family point": "library init - scratch, mean acc",
            "family acc": float(np.mean(lib_minus_scratch)),
            "family lat (us)": None,
        },
    ]
    columns = [
        "family point",
        "family acc",
        "family lat (us)",
        "DONNA lat at >= acc (us)",
        "latency saved",
        "win (>=20% faster)",
        "DONNA acc at <= lat",
        "acc gained",
        "seed spread",
        "win (acc beyond spread)",
        "win",
    ]
    done = wins >= 2 and hv["DONNA"]["mean"] > hv["family"]["mean"]
    seconds["benchmark total"] = time.perf_counter() - t_start
    models_md = "\n".join(
        f"| {p['label']} | `{p['arch']}` | {p['accuracy']:.4f} ({p['seeds'][0]:.4f}, {p['seeds'][1]:.4f}) | "
        f"{s['accuracy']:.4f} ({s['seeds'][0]:.4f}, {s['seeds'][1]:.4f}) | {p['latency_us']:.1f} |"
        for p, s in zip(donna_pts, scratch_pts)
    )
    fam_md = "\n".join(
        f"| {p['label']} | {p['accuracy']:.4f} ({p['seeds'][0]:.4f}, {p['seeds'][1]:.4f}) | {p['latency_us']:.1f} |"
        for p in fam_pts
    )
    notes = (
        f"Space {space.name!r} ({space.size():,} architectures); accuracy model: reference {cfg.reference_epochs} "
        f"epochs (accuracy {am.reference_accuracy:.4f}), BKD {cfg.bkd.steps} steps/block, predictor on "
        f"{cfg.n_archs} architectures. Search: NSGA-II, population {pop}, {sres.stats['evaluations']} architectures "
        f"evaluated ({sres.stats['measured']} measured, {sres.stats['failed']} failed) in {seconds['search']:.0f} s, "
        f"{len(sres.front)} on the predicted front; {len(chosen)} spread along it were trained.\n\n"
        f"Every compared model: {o['epochs']} epochs on {len(x_tr)} images, soft distillation from the reference "
        f"(T={dcfg.temperature:g}, alpha={dcfg.alpha:g}) + cross-entropy, Adam {dcfg.learning_rate:g} cosine; "
        f"seeds {seeds}. Accuracy: the full-int8 TFLite model (post-training quantized on 256 training images) on "
        f"{len(x_ev)} test images, mean of the seeds, spread = |seed 0 - seed 1|. Latency: LiteRTLatency, 1 "
        f"thread, XNNPACK, batch 1, median of {args.latency_rounds} interleaved rounds of 100 runs.\n\n"
        f"Comparisons at each point of the family's front: the cheapest DONNA front point at least as accurate "
        f"(win: >= 20% lower latency), and the most accurate DONNA point no slower (win: accuracy gain larger than "
        f"the larger seed spread of the two points). Hypervolume (pymoo) of (accuracy, latency) per seed against "
        f"(min accuracy - 0.01, 1.05 x max latency) over all points: DONNA {hv['DONNA']['seeds']}, family "
        f"{hv['family']['seeds']}.\n\n"
        f"**Done criteria** (>= 2 winning points and a larger hypervolume): {'met' if done else 'NOT met'} "
        f"({wins} winning point(s); hypervolume DONNA {hv['DONNA']['mean']:.4g} vs family "
        f"{hv['family']['mean']:.4g}).\n\n"
        f"Library init vs scratch (same architectures, loss and epochs): mean int8 accuracy difference "
        f"{np.mean(lib_minus_scratch):+.4f} over {len(lib_minus_scratch)} (architecture, seed) pairs.\n\n"
        f"| DONNA point | architecture | int8 acc, library init (seeds) | int8 acc, scratch (seeds) | latency (us) |\n"
        f"|---|---|---|---|---|\n{models_md}\n\n"
        f"| family point | int8 acc (seeds) | latency (us) |\n|---|---|---|\n{fam_md}\n\n"
        f"Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "."
    )
    table = write_results(
        str(out),
        "DONNA search: finetuned front vs scaled reference family (Fashion-MNIST)",
        rows,
        columns,
        notes,
        extra={
            "donna_points": donna_pts,
            "scratch_points": scratch_pts,
            "family_points": fam_pts,
            "hypervolume": hv,
            "wins": wins,
            "done_criteria_met": done,
            "seconds": seconds,
            "search_stats": sres.stats,
            "chosen": chosen,
            "library_minus_scratch": lib_minus_scratch,
            "reference_accuracy": am.reference_accuracy,
            "config": {"donna": cfg.get_config(), "distill": dcfg.get_config(), **o},
        },
    )
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
