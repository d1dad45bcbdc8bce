"""DONNA search on Fashion-MNIST: the finetuned Pareto front against the reference family scaled by width and depth.

    python -m benchmarks.donna_search --quick             # tiny space, 28x28: models of µs (45 min on 2 cores)
    python -m benchmarks.donna_search --space fmnist64    # 5-block rgb_space on 64x64x1: about 0.1-2 ms per model
    python -m benchmarks.donna_search                     # the 3-block default space, 28x28 (hours on 2 cores)

Three configurations (``--space``): ``tiny`` (``--quick``; ``tiny_space()``, 28x28x1, models of 2-8 µs, where the
interpreter's fixed cost and timer noise are a large share of a latency), ``default`` (``default_space()``, 28x28x1)
and ``fmnist64``: Fashion-MNIST resized bilinearly (``tf.image.resize``) to 64x64x1 on ``rgb_space(64,
channels=1)``, whose int8 models measure about 0.1-2 ms on LiteRT with one thread, the scale at which latency
differences mean something. Its reference trained one epoch of 2,000 images in 33.8 s on this 2-core machine (43.1 s
with the first epoch's tracing; about 59 images/s, while another benchmark shared the cores). At that rate its
defaults (20,000 training images, 5 epochs, 5 front architectures, 3 seeds) process about 3.6 million images in
stage D and the families, plus the accuracy model and the search: about 20-30 hours on 2 cores. It is meant for a
larger machine; it has not been run here.

1. The accuracy model (DONNA stages A and B): reference, BKD block library, predictor.
2. NSGA-II over the space with int8 LiteRT latency measured on this machine (1 thread) and predicted accuracy.
3. ``k`` architectures spread along the front, finetuned from the block library with soft distillation from the
   reference's logits (``--epochs``), and the same architectures from scratch (same loss, same epochs).
4. The reference family: the reference architecture with its channels scaled by width and its blocks' depth set to
   each allowed depth, trained with the same loss,
   a. from scratch, for as many epochs as give it DONNA's per-model training compute (below);
   b. initialized from the trained reference (leading channels, first layers of each block), for ``--epochs``.

Training compute is counted in images through one forward and backward pass of a model (one image = 1). DONNA's
per-model compute = its stage-D epochs x n_train + its share (1/k) of the accuracy model's training: BKD (steps x
batch size x blocks) and stage B (architectures x finetuning steps x batch size). The reference's own training is
the teacher of both sides and is not counted. The family from scratch trains ceil(DONNA per-model / n_train) epochs.

Every model is converted to full int8 (``tflite_export.to_tflite``); accuracy is the int8 model's on the test
images, latency the same ``LiteRTLatency`` measurer for all, in interleaved rounds. ``--seeds`` seeds (default 3) for
every trained model of steps 3 and 4 (the accuracy model and the search are built once, with ``--seed``); spread =
max - min over the seeds. Reported: per-seed accuracies, latency at equal accuracy and accuracy at equal latency at
each point of both families' fronts, the hypervolume of each front per seed, and library vs scratch initialization.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

SPACES = ("tiny", "default", "fmnist64")
SUFFIX = {"tiny": "_quick", "default": "", "fmnist64": "_fmnist64"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="the tiny space and short runs (= --space tiny)")
    p.add_argument("--space", choices=SPACES, default=None, help="configuration (default: default; --quick: tiny)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of every compared model: --seed .. --seed+N-1")
    p.add_argument("--epochs", type=int, default=None, help="stage-D epochs (DONNA, scratch, family from reference)")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--eval-samples", type=int, default=None)
    p.add_argument("--k", type=int, default=None, help="front architectures finetuned")
    p.add_argument("--max-evals", type=int, default=None, help="search evaluation cap")
    p.add_argument("--widths", default=None, help="reference family widths, comma-separated")
    p.add_argument("--reference-epochs", type=int, default=None, help="accuracy model: reference epochs")
    p.add_argument("--bkd-steps", type=int, default=None, help="accuracy model: BKD steps per block")
    p.add_argument("--n-archs", type=int, default=None, help="accuracy model: architectures finetuned in stage B")
    p.add_argument("--finetune-steps", type=int, default=None, help="accuracy model: stage-B steps per architecture")
    p.add_argument("--calibration-samples", type=int, default=None, help="accuracy model: BKD calibration images")
    p.add_argument("--pop-size", type=int, default=None, help="search population")
    p.add_argument("--latency-rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/donna_search")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick and args.space not in (None, "tiny"):
        p.error(f"--quick is the tiny space; drop it or --space {args.space}")
    args.space = "tiny" if args.quick else (args.space or "default")
    if args.seeds < 2:
        p.error(f"--seeds: {args.seeds}; at least 2 are needed for a seed spread")
    return args


def configuration(name: str):
    """``(space, DonnaConfig, sizes, population)`` of a configuration of :data:`SPACES`."""
    from keras_eff.donna import BKDConfig, DonnaConfig, FinetuneConfig, default_space, rgb_space, tiny_space

    if name == "tiny":
        sizes = dict(epochs=5, train_samples=8000, eval_samples=2000, k=5, max_evals=64, widths="0.5,0.75,1")
        return tiny_space(), DonnaConfig.quick(), sizes, 16
    if name == "default":
        cfg = DonnaConfig(
            reference_epochs=3,
            bkd=BKDConfig(steps=500, calibration_samples=500, compile=False),
            bkd_samples=8000,
            val_samples=1000,
            n_archs=20,
            finetune=FinetuneConfig(steps=60),
            finetune_samples=20000,
        )
        sizes = dict(epochs=5, train_samples=20000, eval_samples=5000, k=6, max_evals=240, widths="0.5,0.75,1")
        return default_space(), cfg, sizes, 24
    if name == "fmnist64":
        cfg = DonnaConfig(
            reference_epochs=5,
            bkd=BKDConfig(steps=500, calibration_samples=500),
            bkd_samples=8000,
            val_samples=1000,
            n_archs=20,
            finetune=FinetuneConfig(steps=60),
            finetune_samples=10000,
        )
        sizes = dict(epochs=5, train_samples=20000, eval_samples=5000, k=5, max_evals=240, widths="0.5,0.75,1")
        return rgb_space(64, channels=1), cfg, sizes, 24
    raise ValueError(f"space: {name!r} is unknown; choose from {', '.join(SPACES)}")


def fit_config(cfg, args, n_train: int) -> list:
    """Applies the accuracy-model options of ``args`` to ``cfg`` and caps its sample counts to ``n_train`` images;
    returns what was changed, as phrases for the results' notes."""
    changed = []
    for opt, path in (
        ("reference_epochs", ("reference_epochs",)),
        ("bkd_steps", ("bkd", "steps")),
        ("n_archs", ("n_archs",)),
        ("finetune_steps", ("finetune", "steps")),
        ("calibration_samples", ("bkd", "calibration_samples")),
    ):
        v = getattr(args, opt)
        if v is not None:
            obj = cfg if len(path) == 1 else getattr(cfg, path[0])
            setattr(obj, path[-1], v)
            changed.append(f"{'.'.join(path)} = {v}")
    val = min(cfg.val_samples, max(1, n_train // 5))
    caps = dict(
        val_samples=val,
        bkd_samples=min(cfg.bkd_samples, n_train - val),
        finetune_samples=min(cfg.finetune_samples, n_train - val),
    )
    for k, v in caps.items():
        if v != getattr(cfg, k):
            setattr(cfg, k, v)
            changed.append(f"{k} = {v} (capped to the training images)")
    if cfg.bkd.calibration_samples > cfg.bkd_samples:
        cfg.bkd.calibration_samples = cfg.bkd_samples
        changed.append(f"bkd.calibration_samples = {cfg.bkd_samples} (capped)")
    for c in (cfg.bkd, cfg.finetune, cfg):  # the same checks as new configs
        c.__post_init__()
    return changed


def load_data(name: str, n_train: int, n_eval: int):
    """Fashion-MNIST's first ``n_train`` training and ``n_eval`` test images; for ``fmnist64`` resized bilinearly
    (``tf.image.resize``) to 64x64x1."""
    from keras_eff.datasets import fashion_mnist_float

    (x_train, y_train), (x_test, y_test) = fashion_mnist_float(n_train=n_train, n_test=n_eval)
    if name == "fmnist64":
        import tensorflow as tf

        def up(x):
            return np.concatenate(
                [tf.image.resize(x[i : i + 2048], (64, 64), method="bilinear").numpy() for i in range(0, len(x), 2048)]
            ).astype(np.float32)

        x_train, x_test = up(x_train), up(x_test)
    return (x_train, y_train), (x_test, y_test)


def training_compute(cfg, n_blocks: int, k: int, epochs: int, n_train: int) -> dict:
    """Training compute in images through one forward and backward pass of a model (one image = 1).

    DONNA's per model: stage D (``epochs`` x ``n_train``) + its 1/k share of BKD (steps x batch size x blocks) and
    stage B (architectures x finetuning steps x batch size). The reference's training (the teacher of both sides)
    is not counted. The family trains ``family_epochs`` = ceil(DONNA per model / n_train) epochs.
    """
    bkd = cfg.bkd.steps * cfg.bkd.batch_size * n_blocks
    stage_b = cfg.n_archs * cfg.finetune.steps * cfg.finetune.batch_size
    stage_d = epochs * n_train
    per_model = stage_d + (bkd + stage_b) / k
    family_epochs = math.ceil(per_model / n_train)
    return {
        "bkd": bkd,
        "stage_b": stage_b,
        "stage_d": stage_d,
        "k": k,
        "donna_per_model": per_model,
        "family_epochs": family_epochs,
        "family_per_model": family_epochs * n_train,
        "reference_not_counted": cfg.reference_epochs * (n_train - cfg.val_samples),
    }


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


def init_from_reference(model, reference) -> dict:
    """Copies the trained ``reference``'s weights into ``model`` (in place) layer by layer, by layer name.

    A weight takes the reference's leading slice along every axis (the first channels, for a width below 1); a
    convolution kernel's spatial size must be the same. A family member of depth d has the first d layers of each
    reference block under the same names (``b{i}_l{j}_...``), so those are the layers copied. A layer whose name is
    not in the reference, whose weights differ in number, or one of whose weights is larger than the reference's
    on some axis (or has another kernel size) keeps its fresh initialization. ``reference`` is not changed.

    Args:
        model: The freshly built family member (changed in place).
        reference: The trained reference model.

    Returns:
        ``{"copied": [layer names], "fresh": [layer names]}`` over the layers that hold weights.
    """
    ref_layers = {layer.name: layer for layer in reference.layers}
    copied, fresh = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        src = ref_layers.get(layer.name)
        dst_w = layer.get_weights()
        src_w = [] if src is None else src.get_weights()
        new = []
        if len(src_w) == len(dst_w):
            for d, s in zip(dst_w, src_w):
                spatial_ok = d.ndim != 4 or d.shape[:2] == s.shape[:2]
                if d.ndim != s.ndim or not spatial_ok or any(a > b for a, b in zip(d.shape, s.shape)):
                    break
                new.append(s[tuple(slice(0, n) for n in d.shape)].copy())
        if src is not None and len(new) == len(dst_w):
            layer.set_weights(new)
            copied.append(layer.name)
        else:
            fresh.append(layer.name)
    return {"copied": copied, "fresh": fresh}


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
    times: dict = {k: [] for k in files}
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
    """At each family point: the cheapest DONNA point at least as accurate (mean of the seeds), and the most
    accurate one at most as slow. Points carry ``accuracy`` (mean of the seeds), ``spread`` (max - min over the
    seeds) and ``latency_us``. A "win (acc beyond spread)" needs the gain to exceed the larger spread of the two."""
    rows = []
    for f in sorted(fam, key=lambda p: p["latency_us"]):
        eq_acc = [d for d in donna if d["accuracy"] >= f["accuracy"]]
        eq_lat = [d for d in donna if d["latency_us"] <= f["latency_us"]]
        row = {"family point": f["label"], "family acc": f["accuracy"], "family lat (us)": f["latency_us"]}
        if eq_acc:
            d = min(eq_acc, key=lambda p: p["latency_us"])
            row["DONNA lat at >= acc (us)"] = d["latency_us"]
            row["latency saved"] = 1 - d["latency_us"] / f["latency_us"]
            row["win (>=20% faster)"] = row["latency saved"] >= 0.2
        if eq_lat:
            d = max(eq_lat, key=lambda p: p["accuracy"])
            row["DONNA acc at <= lat"] = d["accuracy"]
            row["acc gained"] = d["accuracy"] - f["accuracy"]
            row["seed spread"] = max(d["spread"], f["spread"])
            row["win (acc beyond spread)"] = row["acc gained"] > row["seed spread"]
        row["win"] = bool(row.get("win (>=20% faster)") or row.get("win (acc beyond spread)"))
        rows.append(row)
    return rows


def plot(path, series, title, unit):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tflite_export.files import atomic_savefig

    fig, ax = plt.subplots(figsize=(7, 5))
    scale = 1e-3 if unit == "ms" else 1.0
    for pts, style, label, kw in series:
        pts = sorted(pts, key=lambda p: p["latency_us"])
        acc = np.array([p["accuracy"] for p in pts])
        ax.errorbar(
            [p["latency_us"] * scale for p in pts],
            acc,
            yerr=[acc - [p["min"] for p in pts], [p["max"] for p in pts] - acc],
            fmt=style,
            capsize=2,
            label=label,
            **kw,
        )
        if kw.get("c") == "tab:green":
            for p in pts:
                ax.annotate(
                    p["label"],
                    (p["latency_us"] * scale, p["accuracy"]),
                    fontsize=6,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
    ax.set_xlabel(f"measured latency, int8 LiteRT, 1 thread ({unit}, median)")
    ax.set_ylabel("int8 test accuracy (mean of the seeds, bars: min-max)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = atomic_savefig(fig, path, dpi=120, format="png")
    plt.close(fig)
    return path


def _seeds_txt(p) -> str:
    return f"{p['accuracy']:.4f} ({', '.join(f'{a:.4f}' for a in p['seeds'])}; spread {p['spread']:.4f})"


def main(argv=None):
    import keras

    from keras_eff.donna import (
        DistillConfig,
        MeasurementCache,
        Scenario,
        SearchConfig,
        build_accuracy_model,
        build_model,
        distill_architectures,
        distill_job,
        hypervolume,
        search,
    )
    from keras_eff.donna.search import spread_along_front
    from keras_eff.reporting import write_results

    args = parse_args(argv)
    t_start = time.perf_counter()
    space, cfg, d, pop = configuration(args.space)
    pop = args.pop_size or pop
    o = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in d.items()}
    widths = [float(w) for w in str(o["widths"]).split(",")]
    cfg.seed = args.seed
    changed = fit_config(cfg, args, o["train_samples"])
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    seconds = {}
    out = Path(args.out + SUFFIX[args.space])
    print(f"configuration {args.space!r}: space {space.name!r}, sizes {o}, seeds {seeds}, changes {changed}")

    (x_tr, y_tr), (x_ev, y_ev) = load_data(args.space, o["train_samples"], o["eval_samples"])
    x_rep = x_tr[:256]

    # 1. accuracy model
    t0 = time.perf_counter()
    am = build_accuracy_model(space, x_tr, y_tr, x_ev, y_ev, cfg, verbose=1)
    seconds["accuracy model"] = time.perf_counter() - t0

    # 2. search with measured latency
    t0 = time.perf_counter()
    scenario = Scenario("litert_1thread", [{"kind": "litert", "num_threads": 1, "runs": 100, "rounds": 3}])
    # host-specific measurements: kept out of the results folder, reused by a rerun on the same machine
    cache = MeasurementCache(Path("artifacts") / f"{out.name}_measurements.json")
    sres = search(
        space, am.predictor, scenario, SearchConfig(pop_size=pop, max_evals=o["max_evals"], seed=args.seed), cache=cache
    )
    sres.save(str(out) + "_pareto.json")
    sres.plot(str(out) + "_search.png")
    seconds["search"] = time.perf_counter() - t0

    chosen = spread_along_front(sres, o["k"])
    n_train = len(x_tr)
    compute = training_compute(cfg, len(space.blocks), len(chosen), o["epochs"], n_train)
    print(
        f"training compute per model (images x passes): DONNA {compute['donna_per_model']:,.0f}, family from "
        f"scratch {compute['family_epochs']} epochs = {compute['family_per_model']:,}"
    )
    dcfg = DistillConfig(epochs=o["epochs"])
    fcfg = DistillConfig(epochs=compute["family_epochs"])
    teacher = am.reference.predict(x_tr, batch_size=512, verbose=0)

    # 3. chosen front architectures: library init vs scratch, every seed, soft distillation from the reference
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
    seconds[f"finetune front (library + scratch, {len(seeds)} seeds)"] = time.perf_counter() - t0

    # 4. the reference family: (a) from scratch with DONNA's compute, (b) from the trained reference, DONNA's epochs
    fam = family(space, widths)
    fam_runs, fam_init = {}, {}
    for kind, config in (("family_scratch", fcfg), ("family_reference", dcfg)):
        t0 = time.perf_counter()
        for s in seeds:
            for label, sp, arch in fam:
                weights = None
                if kind == "family_reference":
                    keras.utils.set_random_seed(s)  # the layers that cannot be copied: the seed's fresh init
                    model = build_model(sp, arch)
                    fam_init[label] = init_from_reference(model, am.reference)
                    weights = model.get_weights()
                job = {
                    "space": sp.get_config(),
                    "arch": str(arch),
                    "weights": weights,
                    "x": x_tr,
                    "y": y_tr,
                    "teacher": teacher,
                    "x_eval": x_ev,
                    "y_eval": y_ev,
                    "config": config.get_config(),
                    "seed": s,
                    "init": kind,
                }
                fam_runs[(kind, label, s)] = distill_job(job)
                print(f"{kind} {label} seed {s}: float accuracy {fam_runs[(kind, label, s)]['accuracy']:.4f}")
        seconds[f"train {kind.replace('_', ' ')} ({len(seeds)} seeds)"] = time.perf_counter() - t0

    # int8 accuracy of every model; latency of one int8 file per architecture, interleaved rounds
    t0 = time.perf_counter()
    files, acc8, acc_float = {}, {}, {}
    for (init, s), results in runs.items():
        for r in results:
            acc8[(init, r["arch"], s)], data = int8_accuracy(space, r, x_rep, x_ev, y_ev)
            acc_float[(init, r["arch"], s)] = r["accuracy"]
            files.setdefault(("donna", r["arch"]), data)
    for (kind, label, s), r in fam_runs.items():
        sp = next(f[1] for f in fam if f[0] == label)
        acc8[(kind, label, s)], data = int8_accuracy(sp, r, x_rep, x_ev, y_ev)
        acc_float[(kind, label, s)] = r["accuracy"]
        files.setdefault(("family", label), data)
    lat = measure_latencies(files, args.latency_rounds)
    seconds["int8 conversion + latency"] = time.perf_counter() - t0

    def point(kind, key, label):
        a = [acc8[(kind, key, s)] for s in seeds]
        src = "donna" if kind in ("library", "scratch") else "family"
        return {
            "label": label,
            "accuracy": float(np.mean(a)),
            "spread": float(max(a) - min(a)),
            "min": float(min(a)),
            "max": float(max(a)),
            "seeds": a,
            "float_seeds": [acc_float[(kind, key, s)] for s in seeds],
            "latency_us": lat[(src, key)],
        }

    donna_pts = [point("library", a, f"D{i}") for i, a in enumerate(chosen)]
    scratch_pts = [point("scratch", a, f"D{i}") for i, a in enumerate(chosen)]
    fam_pts = {kind: [point(kind, f[0], f[0]) for f in fam] for kind in ("family_scratch", "family_reference")}
    for p, a in zip(donna_pts, chosen):
        p["arch"] = a
    donna_front = front_of(donna_pts)
    names = {
        "family_scratch": f"family from scratch, compute-matched ({compute['family_epochs']} epochs)",
        "family_reference": f"family from the reference ({o['epochs']} epochs)",
    }
    comp = {kind: compare_at_points(donna_front, front_of(pts)) for kind, pts in fam_pts.items()}
    wins = {kind: sum(r["win"] for r in rows) for kind, rows in comp.items()}

    # hypervolume per seed, against one reference point for all: (min accuracy - 0.01, 1.05 x max latency)
    per_seed = {
        "DONNA": [[(acc8[("library", a, s)], lat[("donna", a)]) for a in chosen] for s in seeds],
        "DONNA archs from scratch": [[(acc8[("scratch", a, s)], lat[("donna", a)]) for a in chosen] for s in seeds],
        **{
            kind: [[(acc8[(kind, f[0], s)], lat[("family", f[0])]) for f in fam] for s in seeds]
            for kind in ("family_scratch", "family_reference")
        },
    }
    all_pts = [p for pts in per_seed.values() for seed_pts in pts for p in seed_pts]
    ref_acc = min(p[0] for p in all_pts) - 0.01
    ref_lat = max(p[1] for p in all_pts) * 1.05
    hv = {}
    for name, pts_by_seed in per_seed.items():
        vals = [hypervolume([p[0] for p in pts], [p[1] for p in pts], ref_acc, ref_lat) for pts in pts_by_seed]
        hv[name] = {"seeds": vals, "mean": float(np.mean(vals)), "min": float(min(vals)), "max": float(max(vals))}
    lib_minus_scratch = [acc8[("library", a, s)] - acc8[("scratch", a, s)] for a in chosen for s in seeds]

    unit = "ms" if args.space == "fmnist64" else "µs"
    title = (
        f"DONNA vs reference family, {space.name} space ({args.space}), Fashion-MNIST, int8, seeds {seeds}\n"
        f"DONNA {o['epochs']} ep., family scratch {compute['family_epochs']} ep. (compute-matched)"
    )
    plot(
        str(out) + ".png",
        [
            (donna_pts, "o-", "DONNA front, finetuned from the library", {"c": "tab:red"}),
            (scratch_pts, "o:", "same architectures from scratch (same epochs)", {"c": "tab:orange", "mfc": "none"}),
            (fam_pts["family_scratch"], "s--", names["family_scratch"], {"c": "tab:green"}),
            (fam_pts["family_reference"], "^-.", names["family_reference"], {"c": "tab:blue"}),
        ],
        title,
        unit,
    )

    rows = []
    for kind, crows in comp.items():
        rows += [{"vs": names[kind], **r} for r in crows]
    for name in per_seed:
        label = names.get(name, name)
        rows.append({"vs": f"hypervolume {label}", "family acc": hv[name]["mean"], "family point": "mean of seeds"})
    rows.append(
        {"vs": "library init - scratch, mean int8 acc", "family acc": float(np.mean(lib_minus_scratch))},
    )
    columns = [
        "vs",
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
    done = {
        kind: wins[kind] >= 2 and hv["DONNA"]["mean"] > hv[kind]["mean"]
        for kind in ("family_scratch", "family_reference")
    }
    hv_beyond = {kind: hv["DONNA"]["min"] > hv[kind]["max"] for kind in done}
    seconds["benchmark total"] = time.perf_counter() - t_start

    models_md = "\n".join(
        f"| {p['label']} | `{p['arch']}` | {_seeds_txt(p)} | {_seeds_txt(s)} | {p['latency_us']:.1f} |"
        for p, s in zip(donna_pts, scratch_pts)
    )
    fam_md = "\n".join(
        f"| {a['label']} | {_seeds_txt(a)} | {_seeds_txt(b)} | {len(fam_init[a['label']]['fresh'])} of "
        f"{len(fam_init[a['label']]['fresh']) + len(fam_init[a['label']]['copied'])} | {a['latency_us']:.1f} |"
        for a, b in zip(fam_pts["family_scratch"], fam_pts["family_reference"])
    )
    ref_label = f"w1 d{max(b.reference_choice().depth for b in space.blocks)}"
    ref_txt = (
        f" The family point {ref_label} is the reference architecture itself: from scratch it is the reference "
        f"retrained with distillation from itself; from the reference, the reference trained {o['epochs']} more "
        f"epochs with distillation from itself."
        if any(f[0] == ref_label for f in fam)
        else ""
    )
    fresh_total = sum(len(v["fresh"]) for v in fam_init.values())
    hv_txt = "; ".join(
        f"{names.get(k, k)}: mean {v['mean']:.4g} (seeds {', '.join(f'{x:.4g}' for x in v['seeds'])})"
        for k, v in hv.items()
    )
    lat_min, lat_max = min(lat.values()), max(lat.values())
    if args.space == "tiny":
        config_txt = (
            "**Configuration run: `--quick` (the tiny space, 28x28x1).** Its int8 models run in a few "
            f"**microseconds** ({lat_min:.1f}-{lat_max:.1f} µs here), where the interpreter's fixed cost and timer "
            "noise are a large share of a latency: the latency axis here shows orderings, not differences that "
            "would matter on a device. The "
            "configuration at a latency scale that means something is `--space fmnist64` (Fashion-MNIST resized to "
            "64x64 on `rgb_space(64, channels=1)`, int8 models of about 0.1-2 ms); it has not been run on this "
            "2-core machine (about 20-30 hours here; see the benchmark's docstring)."
        )
    elif args.space == "fmnist64":
        config_txt = (
            "**Configuration run: `--space fmnist64`** (Fashion-MNIST resized bilinearly to 64x64x1, "
            f"`rgb_space(64, channels=1)`): int8 models of {lat_min / 1000:.3f}-{lat_max / 1000:.3f} ms here."
        )
    else:
        config_txt = "**Configuration run: the default space** (`default_space()`, 28x28x1)."
    if changed:
        config_txt += f" Accuracy-model settings changed from the configuration's: {', '.join(changed)}."
    notes = (
        f"{config_txt}\n\n"
        f"Space {space.name!r} ({space.size():,} architectures); accuracy model: reference "
        f"{cfg.reference_epochs} epochs (accuracy {am.reference_accuracy:.4f}), BKD {cfg.bkd.steps} steps/block, "
        f"predictor on {cfg.n_archs} architectures finetuned {cfg.finetune.steps} steps; built once, seed "
        f"{args.seed}. Search: NSGA-II, population {pop}, {sres.stats['evaluations']} architectures evaluated "
        f"({sres.stats['measured']} measured, {sres.stats['failed']} failed) in {seconds['search']:.0f} s, "
        f"{len(sres.front)} on the predicted front; {len(chosen)} spread along it were trained.\n\n"
        f"**Training compute**, in images through one forward and backward pass of a model (one image = 1). "
        f"DONNA per model: stage D {o['epochs']} epochs x {n_train:,} = {compute['stage_d']:,} + 1/{len(chosen)} "
        f"of (BKD {cfg.bkd.steps} steps x {cfg.bkd.batch_size} x {len(space.blocks)} blocks = {compute['bkd']:,} "
        f"+ stage B {cfg.n_archs} architectures x {cfg.finetune.steps} steps x {cfg.finetune.batch_size} = "
        f"{compute['stage_b']:,}) = **{compute['donna_per_model']:,.0f}**. The family from scratch trains "
        f"ceil({compute['donna_per_model']:,.0f} / {n_train:,}) = {compute['family_epochs']} epochs = "
        f"**{compute['family_per_model']:,}**. Not counted, on either side: the reference's own training "
        f"({cfg.reference_epochs} epochs x {n_train - cfg.val_samples:,} = {compute['reference_not_counted']:,}), "
        f"the teacher of both; forward-only work (the teacher's logits and block outputs, scoring the choices). "
        f"The family from the reference trains DONNA's {o['epochs']} epochs ({compute['stage_d']:,}) from the "
        f"reference's weights (leading channels, the first d layers of each block; {fresh_total} layer(s) over all "
        f"members could not be sliced and kept their fresh initialization). The same DONNA architectures from "
        f"scratch get {o['epochs']} epochs (not compute-matched: they separate what the library's weights are "
        f"worth).{ref_txt}\n\n"
        f"Every compared model: {n_train:,} images, soft distillation from the reference (T={dcfg.temperature:g}, "
        f"alpha={dcfg.alpha:g}) + cross-entropy, Adam {dcfg.learning_rate:g} cosine; seeds {seeds}. Accuracy: the "
        f"full-int8 TFLite model (post-training quantized on 256 training images) on {len(x_ev):,} test images, "
        f"mean of the seeds; spread = max - min over the seeds. Latency: LiteRTLatency, 1 thread, XNNPACK, batch "
        f"1, median of {args.latency_rounds} interleaved rounds of 100 runs (the two families share one file per "
        f"architecture).\n\n"
        f"Comparisons at each point of each family's front: the cheapest DONNA front point at least as accurate on "
        f"the mean (win: >= 20% lower latency), and the most accurate DONNA point no slower (win: accuracy gain "
        f"larger than the larger seed spread of the two points). Hypervolume (pymoo) of (int8 accuracy, latency) "
        f"per seed, against (min accuracy - 0.01, 1.05 x max latency) over all per-seed points: {hv_txt}.\n\n"
        + "\n".join(
            f"**Done criteria vs {names[k]}** (>= 2 winning points and a larger mean hypervolume): "
            f"{'met' if done[k] else 'NOT met'} ({wins[k]} winning point(s) of {len(comp[k])}; hypervolume DONNA "
            f"{hv['DONNA']['mean']:.4g} vs {hv[k]['mean']:.4g}; DONNA's lowest seed "
            f"{'above' if hv_beyond[k] else 'not above'} the family's highest).\n"
            for k in done
        )
        + f"\nLibrary init vs scratch (same architectures, loss and epochs): mean int8 accuracy difference "
        f"{np.mean(lib_minus_scratch):+.4f} over {len(lib_minus_scratch)} (architecture, seed) pairs.\n\n"
        f"| DONNA point | architecture | int8 acc, library init (seeds) | int8 acc, scratch (seeds) | latency (us) |\n"
        f"|---|---|---|---|---|\n{models_md}\n\n"
        f"| family point | int8 acc, scratch {compute['family_epochs']} epochs (seeds) | int8 acc, from reference "
        f"{o['epochs']} epochs (seeds) | layers not copied | latency (us) |\n|---|---|---|---|---|\n{fam_md}\n\n"
        f"Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "."
    )
    table = write_results(
        str(out),
        f"DONNA search: finetuned front vs scaled reference family (Fashion-MNIST, {args.space})",
        rows,
        columns,
        notes,
        extra={
            "configuration": args.space,
            "seeds": list(seeds),
            "donna_points": donna_pts,
            "scratch_points": scratch_pts,
            "family_points": fam_pts,
            "family_init_from_reference": fam_init,
            "training_compute": compute,
            "hypervolume": hv,
            "wins": wins,
            "done_criteria_met": done,
            "seconds": seconds,
            "search_stats": sres.stats,
            "chosen": chosen,
            "library_minus_scratch": lib_minus_scratch,
            "reference_accuracy": am.reference_accuracy,
            "config": {
                "donna": cfg.get_config(),
                "distill": dcfg.get_config(),
                "family_scratch": fcfg.get_config(),
                "changed": changed,
                **o,
            },
        },
    )
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
