"""Pruning on Fashion-MNIST: uniform vs log-proportional sparsity, and channel pruning that makes the model faster.

    python -m benchmarks.pruning            # the full run (~20 min on 2 idle cores, up to an hour on a shared machine)
    python -m benchmarks.pruning --quick    # a smoke run (~2 min)

A dense small_cnn is trained, then each variant starts from its weights: unstructured pruning at 50/80/90 % with
the uniform and the log-proportional distribution, and 50 % of the filters pruned by channel (prune, then fine-tune,
then the pruned filters removed). The dense baseline is trained for the same number of extra epochs, so every row
saw the same number of steps. Accuracy is the Keras float accuracy of the stripped model and the accuracy of its
int8 TFLite file on the test set; size is the gzip-compressed int8 TFLite file. Latency: LiteRT, batch 1, one
thread, the dense and channel-pruned int8 files measured in interleaved rounds; medians per round, the paired
per-round reduction reported with its spread.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_eff.pruning as kp
from keras_eff.datasets import fashion_mnist_float
from keras_eff.models import compile_classifier, small_cnn
from keras_eff.reporting import write_results
from tflite_export import TFLiteModel, to_tflite
from tflite_export.files import atomic_savefig

RESULTS = os.path.join(os.path.dirname(__file__), "results")

FULL = dict(n_train=10000, n_test=10000, width=32, dense_epochs=4, prune_epochs=3, rounds=15, runs=200)
QUICK = dict(n_train=3000, n_test=1000, width=16, dense_epochs=1, prune_epochs=2, rounds=5, runs=50)


def _evaluate(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def _int8(model, rep, x, y):
    data = to_tflite(model, representative_data=rep)
    acc = float(np.mean(np.argmax(TFLiteModel(data).predict(x), -1) == y))
    return data, acc, len(gzip.compress(data, 9))


def _finetune_rate(cfg, steps):
    """The learning rate of the second phase, the same for every row: cosine from 1e-3 down to 5e-5, so that the
    final accuracies are not a snapshot of a noisy Adam trajectory."""
    return keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps * cfg["prune_epochs"], alpha=0.05)


def _train_variant(dense, cfg, data, schedule, **prune_kwargs):
    (x, y), _ = data
    keras.utils.set_random_seed(2)
    steps = int(np.ceil(len(x) / 64))
    pruned = compile_classifier(kp.prune_model(dense, schedule, **prune_kwargs), _finetune_rate(cfg, steps))
    pruned.fit(
        x, y, batch_size=64, epochs=cfg["prune_epochs"], verbose=2, callbacks=[kp.UpdatePruning(), kp.PruningSummary()]
    )
    return pruned


def _latency_rounds(files: dict, rounds: int, runs: int) -> dict:
    """Interleaved rounds: every model measured once per round, in alternating order; medians per round."""
    models = {name: TFLiteModel(data, num_threads=1) for name, data in files.items()}
    medians = {name: [] for name in files}
    names = list(files)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            medians[name].append(models[name].latency(runs=runs, warmup=20, seed=r).median_us)
    return {name: np.asarray(v) for name, v in medians.items()}


def run(quick: bool = False):
    cfg = QUICK if quick else FULL
    t_start = time.time()
    data = fashion_mnist_float(n_train=cfg["n_train"], n_test=cfg["n_test"])
    (x, y), (xt, yt) = data
    rep = x[:256]
    steps = int(np.ceil(len(x) / 64))
    end_step = max(1, int(steps * cfg["prune_epochs"] / 2))  # ramp over half the epochs, then hold the target
    frequency = max(1, steps // 6)

    keras.utils.set_random_seed(1)
    dense = compile_classifier(small_cnn(width=cfg["width"], name="dense"))
    print(
        f"dense small_cnn width {cfg['width']}: {dense.count_params():,} parameters; training "
        f"{cfg['dense_epochs']} epochs on {len(x):,} images"
    )
    dense.fit(x, y, batch_size=64, epochs=cfg["dense_epochs"], verbose=2)
    dense_first_acc = _evaluate(dense, xt, yt)
    # the baseline trained as long as every pruned variant, with the same second-phase learning rate
    baseline = keras.models.clone_model(dense)
    baseline.set_weights(dense.get_weights())
    compile_classifier(baseline, _finetune_rate(cfg, steps))
    keras.utils.set_random_seed(2)
    baseline.fit(x, y, batch_size=64, epochs=cfg["prune_epochs"], verbose=2)
    dense_file, dense_int8, dense_gz = _int8(baseline, rep, xt, yt)
    rows = [
        {
            "variant": "dense",
            "distribution": "–",
            "target": 0.0,
            "sparsity": 0.0,
            "accuracy": _evaluate(baseline, xt, yt),
            "int8 accuracy": dense_int8,
            "params": baseline.count_params(),
            "int8 gzip bytes": dense_gz,
        }
    ]
    print(rows[-1])

    for target in (0.5, 0.8, 0.9):
        for distribution in ("uniform", "log"):
            schedule = kp.PolynomialDecay(0.0, target, begin_step=0, end_step=end_step, frequency=frequency)
            pruned = _train_variant(dense, cfg, data, schedule, distribution=distribution)
            final = kp.strip(pruned)
            report = kp.sparsity_report(final)
            masked = kp.sparsity_report(pruned)
            print(masked)
            _, acc8, gz = _int8(final, rep, xt, yt)
            rows.append(
                {
                    "variant": "unstructured",
                    "distribution": distribution,
                    "target": target,
                    "sparsity": report.total_sparsity,
                    "pruned-layer sparsity": masked.pruned_sparsity,
                    "accuracy": _evaluate(final, xt, yt),
                    "int8 accuracy": acc8,
                    "params": final.count_params(),
                    "int8 gzip bytes": gz,
                }
            )
            print(rows[-1])

    schedule = kp.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=end_step, frequency=frequency)
    pruned = _train_variant(dense, cfg, data, schedule, structure="channels")
    masked_acc = _evaluate(pruned, xt, yt)
    small = kp.strip(pruned, remove_pruned_channels=True)
    small_file, acc8, gz = _int8(small, rep, xt, yt)
    rows.append(
        {
            "variant": "channels (50% filters)",
            "distribution": "uniform",
            "target": 0.5,
            "sparsity": kp.sparsity_report(pruned).total_sparsity,
            "pruned-layer sparsity": kp.sparsity_report(pruned).pruned_sparsity,
            "accuracy": _evaluate(small, xt, yt),
            "int8 accuracy": acc8,
            "params": small.count_params(),
            "int8 gzip bytes": gz,
        }
    )
    print(rows[-1], f"(masked model before removal: {masked_acc:.4f})")

    lat = _latency_rounds({"dense": dense_file, "channels": small_file}, cfg["rounds"], cfg["runs"])
    paired = 1.0 - lat["channels"] / lat["dense"]
    dense_spread = float((np.percentile(lat["dense"], 90) - np.percentile(lat["dense"], 10)) / np.median(lat["dense"]))
    latency = {
        "dense_median_us": float(np.median(lat["dense"])),
        "channels_median_us": float(np.median(lat["channels"])),
        "dense_round_medians_us": lat["dense"].tolist(),
        "channels_round_medians_us": lat["channels"].tolist(),
        "reduction_median": float(np.median(paired)),
        "reduction_p10": float(np.percentile(paired, 10)),
        "reduction_p90": float(np.percentile(paired, 90)),
        "dense_spread_p10_p90": dense_spread,
        "rounds": cfg["rounds"],
        "runs_per_round": cfg["runs"],
    }
    rows[0]["latency µs"] = latency["dense_median_us"]
    rows[-1]["latency µs"] = latency["channels_median_us"]

    dense_acc = rows[0]["accuracy"]
    at80 = [r for r in rows if r["target"] == 0.8]
    done = {
        "80% within 1 point of dense": all(dense_acc - r["accuracy"] <= 0.01 for r in at80),
        "channel latency reduction p10 >= 20%": latency["reduction_p10"] >= 0.20,
    }
    notes = (
        f"small_cnn width {cfg['width']} ({rows[0]['params']:,} parameters), Fashion-MNIST "
        f"{len(x):,} training / {len(xt):,} test images. Dense trained {cfg['dense_epochs']} epochs "
        f"(test accuracy {dense_first_acc:.4f}); every row then trained {cfg['prune_epochs']} more epochs with "
        f"the learning rate decaying from 1e-3 to 5e-5 (cosine), the pruned ones with PolynomialDecay from 0 "
        f"to the target over {end_step} steps, masks updated every {frequency} steps and at end_step. Layers "
        f"under 1,024 weights (the first conv) stay dense, so 'sparsity' over all kernels is a little under "
        f"the target; the log distribution reaches the target exactly over the pruned layers.\n\n"
        f"Channel pruning: 50% of the filters of conv1 and conv2, BatchNorm masked with them, then removed; "
        f"int8 LiteRT latency (batch 1, 1 thread, XNNPACK), {cfg['rounds']} interleaved rounds of "
        f"{cfg['runs']} runs: dense {latency['dense_median_us']:.0f} µs, channel-pruned "
        f"{latency['channels_median_us']:.0f} µs; paired per-round reduction median "
        f"{latency['reduction_median']:.1%} (p10 {latency['reduction_p10']:.1%}, p90 "
        f"{latency['reduction_p90']:.1%}); dense run-to-run spread (p90−p10)/median {dense_spread:.1%}.\n\n"
        + "\n".join(f"- {k}: {'yes' if v else 'NO'}" for k, v in done.items())
        + f"\n\nWall time {time.time() - t_start:.0f} s{' (--quick)' if quick else ''}."
    )
    stem = os.path.join(RESULTS, "pruning_quick" if quick else "pruning")
    os.makedirs(RESULTS, exist_ok=True)
    table = write_results(
        stem,
        "Pruning on Fashion-MNIST",
        rows,
        [
            "variant",
            "distribution",
            "target",
            "sparsity",
            "pruned-layer sparsity",
            "accuracy",
            "int8 accuracy",
            "params",
            "int8 gzip bytes",
            "latency µs",
        ],
        notes,
        extra={"latency": latency, "config": cfg, "done": done},
    )
    _plot(rows, stem + ".png")
    print(table)
    print(notes)
    return rows, latency, done


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for dist, marker in (("uniform", "o"), ("log", "s")):
        rs = [r for r in rows if r["variant"] == "unstructured" and r["distribution"] == dist]
        a.plot([r["target"] for r in rs], [r["accuracy"] for r in rs], marker=marker, label=dist)
        b.plot([r["target"] for r in rs], [r["int8 gzip bytes"] / 1024 for r in rs], marker=marker, label=dist)
    a.axhline(rows[0]["accuracy"], color="gray", ls="--", label="dense")
    b.axhline(rows[0]["int8 gzip bytes"] / 1024, color="gray", ls="--", label="dense")
    a.set(xlabel="target sparsity", ylabel="test accuracy")
    b.set(xlabel="target sparsity", ylabel="int8 TFLite, gzip KiB")
    a.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs: a smoke run")
    args = parser.parse_args(argv)
    run(quick=args.quick)


if __name__ == "__main__":
    main()
