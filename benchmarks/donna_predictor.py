"""DONNA accuracy predictor on Fashion-MNIST: its cost, its ranking quality, and the ceiling set by seed noise.

    python -m benchmarks.donna_predictor            # default space (about an hour on 2 idle cores)
    python -m benchmarks.donna_predictor --quick    # tiny space (about 15 minutes on 2 idle cores)
    python -m benchmarks.donna_predictor --quick --full-epochs 10   # against full training (about 30 minutes)
    python -m benchmarks.donna_predictor --quick --full-epochs 10 --finetune-steps 300 --finetune-samples 10000 \
        --out benchmarks/results/donna_predictor_b300     # the same with a 10x longer stage B
    python -m benchmarks.donna_predictor --refit benchmarks/results/donna_predictor_full_quick.json --features losses

Builds the accuracy model (reference training, BKD block library, training architectures finetuned with soft
distillation from the reference, ridge fit), then measures held-out architectures with two seeds: Kendall tau of
predicted vs measured (seed 0) accuracy, the ceiling tau(seed 0, seed 1), and the spread of the held-out
accuracies against the seed-to-seed difference.

The held-out measurement is the same short finetuning the predictor learns from (stage B's proxy), or with
``--full-epochs E`` what users get: stage D's training (``distill_architectures``: the library's weights, soft
distillation from the reference, ``E`` epochs on ``--full-samples`` images), twice with two seeds, plus the short
proxy once to show how far the proxy ranks like the full training. The predictor's features are the config's
(``losses+macs`` by default, the fixed rule of docs/donna.md); the feature study beside it is a study, never a
per-run choice.
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
    p.add_argument("--quick", action="store_true", help="tiny space and short runs (minutes)")
    p.add_argument("--held-out", type=int, default=None, help="held-out architectures (default 30)")
    p.add_argument("--n-archs", type=int, default=None, help="architectures that train the predictor")
    p.add_argument("--reference-samples", type=int, default=None, help="training images for the reference")
    p.add_argument("--reference-epochs", type=int, default=None)
    p.add_argument("--bkd-steps", type=int, default=None)
    p.add_argument("--bkd-samples", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--finetune-samples", type=int, default=None, help="training images of stage B's finetuning")
    p.add_argument("--features", default=None, help="predictor features (default: DonnaConfig's)")
    p.add_argument("--eval-samples", type=int, default=None, help="test images that measure accuracy")
    p.add_argument(
        "--full-epochs",
        type=int,
        default=None,
        help="measure held-out architectures after stage D's full training of this many epochs (default: the short "
        "stage B finetuning)",
    )
    p.add_argument("--full-samples", type=int, default=10000, help="training images of the full training")
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"))
    p.add_argument("--out", default="benchmarks/results/donna_predictor")
    p.add_argument(
        "--refit",
        default=None,
        metavar="JSON",
        help="no training: refit the predictor (e.g. other --features) on the measurements a previous run "
        "wrote to JSON, and rewrite the results",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def configure(args):
    """The space, DonnaConfig and benchmark options of a run."""
    from keras_eff.donna import BKDConfig, DonnaConfig, FinetuneConfig, default_space, tiny_space

    if args.quick:
        space, cfg = tiny_space(), DonnaConfig.quick()
        defaults = dict(held_out=30, reference_samples=60000, eval_samples=2000)
        if args.full_epochs:
            defaults.update(held_out=20, eval_samples=5000)
    else:
        space = default_space()
        quick = DonnaConfig.quick()
        cfg = DonnaConfig(
            reference_epochs=5,
            bkd=BKDConfig(steps=2000, calibration_samples=500),
            bkd_samples=10000,
            val_samples=1000,
            n_archs=24,
            finetune=FinetuneConfig(steps=60),
            finetune_samples=20000,
            features=quick.features,
            alpha=quick.alpha,
            sampling=quick.sampling,
        )
        defaults = dict(held_out=30, reference_samples=60000, eval_samples=5000)
    o = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    for arg, set_it in (
        ("n_archs", lambda v: setattr(cfg, "n_archs", v)),
        ("reference_epochs", lambda v: setattr(cfg, "reference_epochs", v)),
        ("bkd_steps", lambda v: setattr(cfg.bkd, "steps", v)),
        ("bkd_samples", lambda v: setattr(cfg, "bkd_samples", v)),
        ("finetune_steps", lambda v: setattr(cfg.finetune, "steps", v)),
        ("finetune_samples", lambda v: setattr(cfg, "finetune_samples", v)),
        ("features", lambda v: setattr(cfg, "features", v)),
    ):
        if getattr(args, arg):
            set_it(getattr(args, arg))
    cfg.seed = args.seed
    return space, cfg, o


def output_path(args) -> Path:
    """``--out`` with ``_full`` for a run against full training and ``_quick`` for the tiny space."""
    return Path(args.out + ("_full" if args.full_epochs else "") + ("_quick" if args.quick else ""))


def measure(args, space, cfg, o) -> dict:
    """Builds the accuracy model and measures the held-out architectures with two seeds: the raw measurements."""
    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.donna import build_accuracy_model, make_executor, measure_architectures

    t_start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = fashion_mnist_float()
    x_ref, y_ref = x_train[: o["reference_samples"]], y_train[: o["reference_samples"]]
    x_eval, y_eval = x_test[: o["eval_samples"]], y_test[: o["eval_samples"]]
    executor = make_executor(args.executor)

    model = build_accuracy_model(
        space, x_ref, y_ref, x_eval, y_eval, cfg, executor=executor, budget_s=None if args.quick else 3600, verbose=2
    )
    out = output_path(args)
    model.save(out.parent / (out.name + "_artifacts"))

    # held-out architectures, distinct from the training ones, drawn uniformly, measured with two seeds
    t0 = time.perf_counter()
    seen = set(model.archs)
    held = [a for a in space.sample(o["held_out"] + len(seen), seed=args.seed + 101) if a not in seen][: o["held_out"]]
    ft_x, ft_y = x_ref[: cfg.finetune_samples], y_ref[: cfg.finetune_samples]
    seeds = (args.seed, args.seed + 1)

    def proxy(s):
        """Stage B's short finetuning (what the predictor learns from)."""
        results = measure_architectures(
            model.library,
            held,
            ft_x,
            ft_y,
            x_eval,
            y_eval,
            cfg.finetune,
            seed=s,
            executor=executor,
            desc=f"held-out, short finetuning, seed {s}",
            reference=model.reference,
        )
        return [r["accuracy"] for r in results]

    extra = {}
    if args.full_epochs:
        from keras_eff.donna import DistillConfig, distill_architectures

        full_x, full_y = x_ref[: args.full_samples], y_ref[: args.full_samples]
        dcfg = DistillConfig(epochs=args.full_epochs, temperature=cfg.finetune.temperature, alpha=cfg.finetune.alpha)
        logits = model.reference.predict(full_x, batch_size=512, verbose=0)
        runs = []
        for s in seeds:
            results = distill_architectures(
                model.library,
                model.reference,
                held,
                full_x,
                full_y,
                x_eval,
                y_eval,
                dcfg,
                seed=s,
                executor=executor,
                teacher_logits=logits,
                desc=f"held-out, full training, seed {s}",
            )
            runs.append([r["accuracy"] for r in results])
        extra = {
            "full": {"epochs": args.full_epochs, "samples": len(full_x), "config": dcfg.get_config()},
            "proxy_seed0": proxy(seeds[0]),
        }
    else:
        runs = [proxy(s) for s in seeds]
    seconds = dict(model.seconds)
    seconds["held-out (2 seeds)" + (", full training" if args.full_epochs else "")] = time.perf_counter() - t0
    seconds["benchmark total"] = time.perf_counter() - t_start
    return {
        "space": space.get_config(),
        "config": cfg.get_config(),
        "options": o,
        "executor": executor.describe(),
        "seconds": seconds,
        "reference_accuracy": model.reference_accuracy,
        "reference_epoch_seconds": model.reference_epoch_seconds,
        "loss_table": [t.tolist() for t in model.library.loss_table()],
        "library_meta": model.library.meta,
        "train_archs": [str(a) for a in model.archs],
        "train_accuracies": model.accuracies.tolist(),
        "held_out": [str(a) for a in held],
        "measured_seed0": runs[0],
        "measured_seed1": runs[1],
        **extra,
    }


def study(space, raw, features_list, n_list) -> list:
    """Each feature set fitted (alpha by leave-one-out) on the training architectures: held-out tau, and the
    leave-one-out tau on the training architectures alone (what a user without held-out measurements can see);
    then the chosen features fitted on the first n training architectures."""
    from scipy.stats import kendalltau

    from keras_eff.donna import AccuracyPredictor

    y, held, m0 = np.asarray(raw["train_accuracies"]), raw["held_out"], raw["measured_seed0"]
    rows = []
    for features, n in [(f, len(y)) for f in features_list] + [(features_list[0], n) for n in n_list]:
        p = AccuracyPredictor(space, raw["loss_table"], features, "cv")
        p.fit(raw["train_archs"][:n], y[:n])
        loo = p.loo_predictions(raw["train_archs"][:n], y[:n])
        rows.append(
            {
                "features": features,
                "training archs": n,
                "alpha": p.alpha_,
                "held-out tau": float(kendalltau(p.predict(held), m0).statistic),
                "training LOO tau": float(kendalltau(loo, y[:n]).statistic),
            }
        )
    return rows


def report(raw, out: Path, features: str, refit_from: str | None = None) -> None:
    """Fits the predictor on the raw measurements, prints and writes the tables, JSON and plot."""
    from scipy.stats import kendalltau

    from keras_eff.donna import AccuracyPredictor, DonnaConfig, SearchSpace, plot_predictions
    from keras_eff.donna.pipeline import print_budget
    from keras_eff.donna.predictor import FEATURES
    from keras_eff.reporting import markdown_table, write_results

    space, cfg = SearchSpace.from_config(raw["space"]), DonnaConfig.from_config(raw["config"])
    cfg.features = features
    t0 = time.perf_counter()
    predictor = AccuracyPredictor(space, raw["loss_table"], features, cfg.alpha)
    predictor.fit(raw["train_archs"], raw["train_accuracies"])
    seconds = dict(raw["seconds"])
    fit_s = seconds.get("fit predictor", 0.0)
    seconds["fit predictor"] = max(fit_s, time.perf_counter() - t0)
    seconds["total"] += seconds["fit predictor"] - fit_s
    held, runs = raw["held_out"], [np.asarray(raw["measured_seed0"]), np.asarray(raw["measured_seed1"])]
    predicted = predictor.predict(held)
    tau = float(kendalltau(predicted, runs[0]).statistic)
    tau_seed1 = float(kendalltau(predicted, runs[1]).statistic)
    ceiling = float(kendalltau(runs[0], runs[1]).statistic)
    diff = np.abs(runs[0] - runs[1])
    spread_std, spread_range = float(np.std(runs[0])), float(np.ptp(runs[0]))
    epoch_s = raw["reference_epoch_seconds"]
    cost_epochs = seconds["total"] / epoch_s
    budget_epochs = 5 * cfg.reference_epochs
    o = raw["options"]
    full = raw.get("full")
    measured_as = (
        f"stage D training, {full['epochs']} epochs on {full['samples']} images" if full else "short finetuning"
    )

    plot_predictions(
        runs[0],
        predicted,
        str(out) + ".png",
        title=f"DONNA predictor ({features}), {space.name}, {len(held)} held-out archs, {measured_as}",
        extra=f" (ceiling {ceiling:.3f})",
    )
    rows = [
        {
            "quantity": "reference accuracy",
            "value": raw["reference_accuracy"],
            "note": f"{cfg.reference_epochs} epochs on {o['reference_samples']} images",
        },
        {"quantity": "reference epoch (s)", "value": epoch_s, "note": "wall time (median epoch)"},
        {"quantity": "accuracy model cost (s)", "value": seconds["total"], "note": "reference + BKD + finetune + fit"},
        {
            "quantity": "accuracy model cost (reference epochs)",
            "value": cost_epochs,
            "note": f"limit: 5 reference trainings = {budget_epochs} epochs",
        },
        {
            "quantity": "accuracy model cost (reference trainings)",
            "value": seconds["total"] / seconds["reference"],
            "note": "total over the reference's own training time (tracing included); target <= 5",
        },
        {
            "quantity": "training architectures",
            "value": len(raw["train_archs"]),
            "note": f"{cfg.sampling} sampling, {cfg.finetune.steps} finetuning steps each, soft distillation "
            f"(T={cfg.finetune.temperature:g}, alpha={cfg.finetune.alpha:g})",
        },
        {
            "quantity": "predictor features",
            "value": features,
            "note": f"ridge alpha {predictor.alpha_:.3g} ({cfg.alpha})",
        },
        {
            "quantity": "held-out architectures",
            "value": len(held),
            "note": f"uniform sampling; measured after {measured_as}, two seeds each",
        },
        {"quantity": "Kendall tau predicted vs measured (seed 0)", "value": tau, "note": ""},
        {"quantity": "Kendall tau predicted vs measured (seed 1)", "value": tau_seed1, "note": ""},
        {"quantity": "ceiling: Kendall tau seed 0 vs seed 1", "value": ceiling, "note": ""},
        {
            "quantity": "tau / ceiling",
            "value": tau / ceiling if ceiling > 0 else float("nan"),
            "note": "target >= 0.9" if full else "target >= 0.8",
        },
        {
            "quantity": "held-out accuracy std",
            "value": spread_std,
            "note": f"range {spread_range:.4f} ({runs[0].min():.3f} to {runs[0].max():.3f})",
        },
        {"quantity": "mean |seed 0 - seed 1|", "value": float(diff.mean()), "note": f"max {diff.max():.4f}"},
        {
            "quantity": "spread (std) / seed difference",
            "value": spread_std / max(float(diff.mean()), 1e-9),
            "note": "target >= 5",
        },
        {
            "quantity": "spread (range) / seed difference",
            "value": spread_range / max(float(diff.mean()), 1e-9),
            "note": "",
        },
    ]
    if full:
        proxy = np.asarray(raw["proxy_seed0"])
        mean = (runs[0] + runs[1]) / 2
        rows[-4:-4] = [
            {
                "quantity": "Kendall tau predicted vs measured (mean of seeds)",
                "value": float(kendalltau(predicted, mean).statistic),
                "note": "",
            },
            {
                "quantity": "Kendall tau short finetuning vs full training (seed 0)",
                "value": float(kendalltau(proxy, runs[0]).statistic),
                "note": f"the proxy the predictor learns from ({cfg.finetune.steps} steps), same architectures",
            },
        ]
    others = [features] + [f for f in FEATURES if f != features]
    n_all = len(raw["train_archs"])
    srows = study(space, raw, others, [n for n in (8, 12, 16) if n < n_all])
    bkd = raw["library_meta"]["bkd"]
    notes = (
        f"Space {space.name!r} ({len(space.blocks)} blocks, {space.size():,} architectures). BKD: "
        f"{bkd['steps']} steps/block on {cfg.bkd_samples} images (final training NSR per block "
        f"{', '.join(f'{v:.3f}' for v in raw['library_meta']['final_train_nsr'])}); finetuning: "
        f"{cfg.finetune.steps} steps of {cfg.finetune.batch_size} on {cfg.finetune_samples} images; accuracy on "
        f"{o['eval_samples']} test images. Executor: {raw['executor']}. Plot: {out.name}.png.\n\n"
        + (
            f"Held-out architectures measured as users get them: stage D's `distill_architectures` (library "
            f"weights, soft distillation from the reference, T={full['config']['temperature']:g}, "
            f"alpha={full['config']['alpha']:g}, Adam {full['config']['learning_rate']:g} cosine), "
            f"{full['epochs']} epochs of {full['config']['batch_size']} on {full['samples']} images, seeds 0 and 1. "
            f"The predictor's features are the fixed default ({features!r}, docs/donna.md), not the best row of "
            f"the study below.\n\n"
            if full
            else ""
        )
        + (
            f"Predictor refitted (`--refit`, features {features!r}) on the measurements of the run of "
            f"{raw.get('date', 'an earlier date')}; nothing retrained.\n\n"
            if refit_from
            else ""
        )
        + "Feature study (the same measurements; alpha by leave-one-out on the training architectures):\n\n"
        + markdown_table(srows, ["features", "training archs", "alpha", "held-out tau", "training LOO tau"])
    )
    table = write_results(
        str(out),
        "DONNA accuracy predictor" + (" against full training" if full else "") + " (Fashion-MNIST)",
        rows,
        ["quantity", "value", "note"],
        notes,
        extra={
            "config": cfg.get_config(),
            "seconds": seconds,
            "predicted": predicted,
            "study": srows,
            "predictor": predictor.get_config(),
            "raw": raw,
        },
    )
    print(table)
    print(notes)
    print_budget("benchmark", seconds, epoch_s)


def main(argv=None):
    import json

    args = parse_args(argv)
    if args.refit:
        doc = json.loads(Path(args.refit).read_text())
        raw = doc["raw"]
        features = args.features or doc["config"]["features"]  # the features that file reports
        out = Path(args.refit[: -len(".json")] if args.refit.endswith(".json") else args.refit)
    else:
        space, cfg, o = configure(args)
        raw = measure(args, space, cfg, o)
        raw["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        features, out = cfg.features, output_path(args)
    report(raw, out, features, args.refit)


if __name__ == "__main__":
    main()
