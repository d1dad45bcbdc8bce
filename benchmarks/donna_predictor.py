"""DONNA accuracy predictor on Fashion-MNIST: its cost, its ranking quality, and the ceiling set by seed noise.

    python -m benchmarks.donna_predictor            # default space (about an hour on 2 idle cores)
    python -m benchmarks.donna_predictor --quick    # tiny space, a few minutes

Builds the accuracy model (reference training, BKD block library, finetuned training architectures, ridge fit),
then finetunes held-out architectures twice with two seeds: Kendall tau of predicted vs measured (seed 0) accuracy,
the ceiling tau(seed 0, seed 1), and the spread of the held-out accuracies against the seed-to-seed difference.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny space and short runs (minutes)")
    p.add_argument("--held-out", type=int, default=None, help="held-out architectures (default 30; quick 10)")
    p.add_argument("--n-archs", type=int, default=None, help="architectures that train the predictor")
    p.add_argument("--reference-samples", type=int, default=None, help="training images for the reference")
    p.add_argument("--reference-epochs", type=int, default=None)
    p.add_argument("--bkd-steps", type=int, default=None)
    p.add_argument("--bkd-samples", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--eval-samples", type=int, default=None, help="test images that measure accuracy")
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"))
    p.add_argument("--out", default="benchmarks/results/donna_predictor")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    from scipy.stats import kendalltau

    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.donna import (BKDConfig, DonnaConfig, FinetuneConfig, build_accuracy_model, default_space,
                                 make_executor, measure_architectures, plot_predictions, tiny_space)
    from keras_eff.donna.pipeline import print_budget
    from keras_eff.reporting import write_results

    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.quick:
        space, cfg = tiny_space(), DonnaConfig.quick()
        defaults = dict(held_out=10, reference_samples=6000, eval_samples=2000)
    else:
        space = default_space()
        cfg = DonnaConfig(reference_epochs=3, bkd=BKDConfig(steps=500, calibration_samples=500, compile=False),
                          bkd_samples=8000, val_samples=1000, n_archs=20, finetune=FinetuneConfig(steps=60),
                          finetune_samples=20000)
        defaults = dict(held_out=30, reference_samples=20000, eval_samples=5000)
    o = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    if args.n_archs:
        cfg.n_archs = args.n_archs
    if args.reference_epochs:
        cfg.reference_epochs = args.reference_epochs
    if args.bkd_steps:
        cfg.bkd.steps = args.bkd_steps
    if args.bkd_samples:
        cfg.bkd_samples = args.bkd_samples
    if args.finetune_steps:
        cfg.finetune.steps = args.finetune_steps
    cfg.seed = args.seed

    (x_train, y_train), (x_test, y_test) = fashion_mnist_float()
    x_ref, y_ref = x_train[:o["reference_samples"]], y_train[:o["reference_samples"]]
    x_eval, y_eval = x_test[:o["eval_samples"]], y_test[:o["eval_samples"]]
    executor = make_executor(args.executor)

    model = build_accuracy_model(space, x_ref, y_ref, x_eval, y_eval, cfg, executor=executor,
                                 budget_s=180 if args.quick else 3600, verbose=2)
    out = Path(args.out + ("_quick" if args.quick else ""))
    model.save(out.parent / (out.name + "_artifacts"))

    # held-out architectures, distinct from the training ones, finetuned with two seeds
    t0 = time.perf_counter()
    seen = set(model.archs)
    held = [a for a in space.sample(o["held_out"] + len(seen), seed=args.seed + 101) if a not in seen][:o["held_out"]]
    ft_x, ft_y = x_ref[:cfg.finetune_samples], y_ref[:cfg.finetune_samples]
    runs = [np.array([r["accuracy"] for r in measure_architectures(
        model.library, held, ft_x, ft_y, x_eval, y_eval, cfg.finetune, seed=s, executor=executor,
        desc=f"held-out seed {s}")]) for s in (args.seed, args.seed + 1)]
    held_s = time.perf_counter() - t0
    predicted = model.predictor.predict(held)
    tau = float(kendalltau(predicted, runs[0]).statistic)
    tau_seed1 = float(kendalltau(predicted, runs[1]).statistic)
    ceiling = float(kendalltau(runs[0], runs[1]).statistic)
    diff = np.abs(runs[0] - runs[1])
    spread_std = float(np.std(runs[0]))
    spread_range = float(np.ptp(runs[0]))
    cost_epochs = model.cost_reference_epochs
    budget_epochs = 5 * cfg.reference_epochs

    plot_predictions(runs[0], predicted, str(out) + ".png",
                     title=f"DONNA predictor, {space.name}, {len(held)} held-out archs",
                     extra=f" (ceiling {ceiling:.3f})")
    rows = [
        {"quantity": "reference accuracy", "value": model.reference_accuracy, "note": f"{cfg.reference_epochs} epochs on {len(x_ref)} images"},
        {"quantity": "reference epoch (s)", "value": model.reference_epoch_seconds, "note": "wall time"},
        {"quantity": "accuracy model cost (s)", "value": model.seconds["total"], "note": "reference + BKD + finetune + fit"},
        {"quantity": "accuracy model cost (reference epochs)", "value": cost_epochs,
         "note": f"limit: 5 reference trainings = {budget_epochs} epochs"},
        {"quantity": "accuracy model cost (reference trainings)", "value": model.seconds["total"] / model.seconds["reference"],
         "note": "total over the reference's own training time (tracing included); target <= 5"},
        {"quantity": "training architectures", "value": len(model.archs), "note": f"{cfg.finetune.steps} finetuning steps each"},
        {"quantity": "held-out architectures", "value": len(held), "note": "two seeds each"},
        {"quantity": "Kendall tau predicted vs measured (seed 0)", "value": tau, "note": ""},
        {"quantity": "Kendall tau predicted vs measured (seed 1)", "value": tau_seed1, "note": ""},
        {"quantity": "ceiling: Kendall tau seed 0 vs seed 1", "value": ceiling, "note": ""},
        {"quantity": "tau / ceiling", "value": tau / ceiling if ceiling > 0 else float("nan"), "note": "target >= 0.8"},
        {"quantity": "held-out accuracy std", "value": spread_std, "note": f"range {spread_range:.4f}"},
        {"quantity": "mean |seed 0 - seed 1|", "value": float(diff.mean()), "note": f"max {diff.max():.4f}"},
        {"quantity": "spread (std) / seed difference", "value": spread_std / max(float(diff.mean()), 1e-9),
         "note": "target >= 5"},
        {"quantity": "spread (range) / seed difference", "value": spread_range / max(float(diff.mean()), 1e-9),
         "note": ""},
    ]
    seconds = dict(model.seconds)
    seconds["held-out (2 seeds)"] = held_s
    seconds["benchmark total"] = time.perf_counter() - t_start
    notes = (f"Space {space.name!r} ({len(space.blocks)} blocks, {space.size():,} architectures). BKD: "
             f"{cfg.bkd.steps} steps/block on {cfg.bkd_samples} images; finetuning: {cfg.finetune.steps} steps of "
             f"{cfg.finetune.batch_size} on {cfg.finetune_samples} images; accuracy on {len(x_eval)} test images. "
             f"Executor: {executor.describe()}. Plot: {out.name}.png.")
    table = write_results(str(out), "DONNA accuracy predictor (Fashion-MNIST)", rows, ["quantity", "value", "note"],
                          notes, extra={"config": cfg.get_config(), "seconds": seconds,
                                        "held_out": [str(a) for a in held], "predicted": predicted,
                                        "measured_seed0": runs[0], "measured_seed1": runs[1],
                                        "train_archs": [str(a) for a in model.archs],
                                        "train_accuracies": model.accuracies,
                                        "library_meta": model.library.meta})
    print(table)
    print(notes)
    print_budget("benchmark", seconds, model.reference_epoch_seconds)


if __name__ == "__main__":
    main()
