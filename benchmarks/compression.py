"""Compression to half the MACs on Fashion-MNIST: spatial SVD, channel pruning, and both.

    python -m benchmarks.compression            # the full run (~20 min on 2 idle cores, ~45 min when shared)
    python -m benchmarks.compression --quick    # a smoke run (~5 min idle, ~8 min shared)

A VGG-like CNN (3 blocks of two 3×3 conv-BN-ReLU, widths 32/64/64, global pooling, dense; 21.9 M MACs, conv MACs
99.9 %) is trained on a slice of the training set (12,000 images, 4 epochs; the test slice is 5,000 images). Each
method compresses it to 50 % of its MACs, with per-layer ratios chosen from per-layer sensitivity measured as
accuracy on a validation slice (training images the model was not trained on); ranks and kept channels are multiples
of 8. "Both" is spatial SVD to 1/√2 of the MACs followed by channel pruning of the factorized model to 50 % of the
original. Each compressed model is then fine-tuned for a few epochs; the original is trained for the same extra
epochs as a reference ("original, trained as long").
Accuracy is on the test set, for the Keras float model and its int8 TFLite file (post-training quantized with 256
training images). MACs are counted on the Keras model and on the TFLite file. Latency: LiteRT, XNNPACK, one thread,
batch 1, int8; the four int8 files are measured in interleaved rounds (alternating order) and the median of each
round kept; the table gives the median over rounds with the min–max spread, and the paired per-round speed-up of
each model over the original.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from keras import layers

from keras_eff.compression import ChannelPruningConfig, SpatialSvdConfig, channel_pruning, count_macs, spatial_svd
from keras_eff.datasets import fashion_mnist_float
from keras_eff.graph import rebuild
from keras_eff.models import compile_classifier
from keras_eff.reporting import write_results
from tflite_export import TFLiteModel, to_tflite
from tflite_export import count_macs as tflite_macs

RESULTS = os.path.join(os.path.dirname(__file__), "results")

FULL = dict(
    n_train=12000,
    n_val=600,
    n_test=5000,
    epochs=4,
    finetune_epochs=2,
    finetune_lr=5e-4,
    ratios=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3),
    rounds=11,
    runs=200,
)
QUICK = dict(
    n_train=3000,
    n_val=300,
    n_test=1000,
    epochs=1,
    finetune_epochs=1,
    finetune_lr=5e-4,
    ratios=(0.75, 0.5, 0.25),
    rounds=3,
    runs=50,
)
TARGET = 0.5


def vgg(widths=(32, 64, 64), num_classes=10, bn_momentum=0.9, name="vgg"):
    """Blocks of two 3×3 conv-BN-ReLU with max pooling between, global average pooling, a dense classifier."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = inputs
    for b, width in enumerate(widths):
        for j in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{b}_conv{j}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"b{b}_bn{j}")(x)
            x = layers.ReLU(name=f"b{b}_relu{j}")(x)
        if b < len(widths) - 1:
            x = layers.MaxPooling2D(name=f"b{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


def accuracy(model, x, y, batch_size=250) -> float:
    hits = 0
    for i in range(0, len(x), batch_size):
        logits = keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        hits += int(np.sum(np.argmax(logits, -1) == y[i : i + batch_size]))
    return hits / len(x)


def finetune(model, x, y, epochs, lr, seed=3):
    keras.utils.set_random_seed(seed)
    model = compile_classifier(model, learning_rate=lr)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    return model


def latency_rounds(files: dict, rounds: int, runs: int) -> dict:
    """Every model measured once per round, the order alternating between rounds; the median of each round."""
    runners = {k: TFLiteModel(v, num_threads=1) for k, v in files.items()}
    medians = {k: [] for k in runners}
    for r in range(rounds):
        for k in list(runners) if r % 2 == 0 else list(runners)[::-1]:
            medians[k].append(runners[k].latency(runs=runs, warmup=max(10, runs // 10)).median_us)
    return {k: np.array(v) for k, v in medians.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    stem = os.path.join(RESULTS, "compression_quick" if args.quick else "compression")
    started = time.time()

    (x_all, y_all), (x_test, y_test) = fashion_mnist_float(n_test=cfg["n_test"])
    x_train, y_train = x_all[: cfg["n_train"]], y_all[: cfg["n_train"]]
    x_val, y_val = x_all[-cfg["n_val"] :], y_all[-cfg["n_val"] :]  # never trained on: the sensitivity metric
    rep = x_train[:256]

    keras.utils.set_random_seed(1)
    original = compile_classifier(vgg())
    original.fit(x_train, y_train, batch_size=64, epochs=cfg["epochs"], verbose=2)
    print(f"original trained ({time.time() - started:.0f} s)", flush=True)

    def eval_fn(model):
        return accuracy(model, x_val, y_val)

    svd_params = SpatialSvdConfig(candidate_ratios=cfg["ratios"], multiple=8)
    cp_params = ChannelPruningConfig(candidate_ratios=cfg["ratios"], multiple=8)
    orig_macs = count_macs(original).total_macs

    results, reports = {}, {}
    t = time.time()
    reports["svd"] = spatial_svd(original, TARGET, eval_fn=eval_fn, config=svd_params)
    results["spatial SVD"] = reports["svd"].model
    print(reports["svd"].summary(), f"({time.time() - t:.0f} s)", flush=True)
    t = time.time()
    reports["cp"] = channel_pruning(original, TARGET, x_train, eval_fn=eval_fn, config=cp_params)
    results["channel pruning"] = reports["cp"].model
    print(reports["cp"].summary(), f"({time.time() - t:.0f} s)", flush=True)
    t = time.time()
    first = spatial_svd(original, math.sqrt(TARGET), eval_fn=eval_fn, config=svd_params)
    second_target = TARGET * orig_macs / first.compressed_cost.total_macs
    reports["both"] = channel_pruning(first.model, second_target, x_train, eval_fn=eval_fn, config=cp_params)
    reports["both_svd"] = first
    results["SVD + channel pruning"] = reports["both"].model
    print(first.summary(), reports["both"].summary(), f"({time.time() - t:.0f} s)", sep="\n", flush=True)

    os.makedirs(RESULTS, exist_ok=True)
    reports["svd"].sensitivity.plot(
        f"{stem}_sensitivity_svd.png", "Spatial SVD: validation accuracy, one layer at a time"
    )
    reports["cp"].sensitivity.plot(
        f"{stem}_sensitivity_cp.png", "Channel pruning: validation accuracy, one layer at a time"
    )

    rows, files = [], {}
    reference = finetune(rebuild(original), x_train, y_train, cfg["finetune_epochs"], cfg["finetune_lr"])
    models = [("original", original, None), ("original, trained as long", reference, None)]
    for label, model in results.items():
        before = accuracy(model, x_test, y_test)
        tuned = finetune(model, x_train, y_train, cfg["finetune_epochs"], cfg["finetune_lr"])
        models.append((label, tuned, before))
        print(f"{label}: fine-tuned ({time.time() - started:.0f} s)", flush=True)

    for label, model, before in models:
        data = to_tflite(model, representative_data=rep)
        files[label] = data
        int8_acc = float(np.mean(np.argmax(TFLiteModel(data).predict(x_test), -1) == y_test))
        cost = count_macs(model)
        rows.append(
            {
                "model": label,
                "acc_before_ft": before,
                "acc": accuracy(model, x_test, y_test),
                "acc_int8": int8_acc,
                "macs": cost.total_macs,
                "macs_tflite": tflite_macs(data).total_macs,
                "mac_ratio": cost.total_macs / orig_macs,
                "params": cost.total_params,
            }
        )

    lat_files = {k: files[k] for k in ("original", "spatial SVD", "channel pruning", "SVD + channel pruning")}
    medians = latency_rounds(lat_files, cfg["rounds"], cfg["runs"])
    base = medians["original"]
    for row in rows:
        m = medians.get(row["model"], medians["original"] if row["model"].startswith("original") else None)
        paired = 1.0 - m / base
        row.update(
            latency_us=float(np.median(m)),
            lat_min_us=float(m.min()),
            lat_max_us=float(m.max()),
            speedup=float(np.median(paired)),
            speedup_min=float(paired.min()),
            speedup_max=float(paired.max()),
        )
        if row["model"] == "original, trained as long":  # same graph as the original: not measured again
            for k in ("latency_us", "lat_min_us", "lat_max_us", "speedup", "speedup_min", "speedup_max"):
                row[k] = None

    by = {r["model"]: r for r in rows}
    both, orig = by["SVD + channel pruning"], by["original"]
    spread = max(
        (orig["lat_max_us"] - orig["lat_min_us"]) / orig["latency_us"],
        (both["lat_max_us"] - both["lat_min_us"]) / both["latency_us"],
    )
    done = {
        "accuracy_drop_points": 100 * (orig["acc"] - both["acc"]),
        "within_1_point": orig["acc"] - both["acc"] <= 0.01,
        "speedup": both["speedup"],
        "worst_round_speedup": both["speedup_min"],
        "latency_spread_relative": spread,
        "faster_by_15pct_beyond_spread": both["speedup"] >= 0.15
        and both["speedup_min"] > 0
        and both["lat_max_us"] < orig["lat_min_us"],
    }
    columns = [
        "model",
        "acc_before_ft",
        "acc",
        "acc_int8",
        "macs",
        "macs_tflite",
        "mac_ratio",
        "params",
        "latency_us",
        "lat_min_us",
        "lat_max_us",
        "speedup",
        "speedup_min",
        "speedup_max",
    ]
    per_layer = {
        k: {
            "summary": r.summary(),
            "layer_ratios": r.layer_ratios,
            "layer_settings": r.layer_settings,
            "sensitivity": r.sensitivity.get_config(),
        }
        for k, r in reports.items()
    }
    notes = (
        f"Config: {cfg}. Target: {TARGET:.0%} of the MACs. acc_before_ft: test accuracy straight after "
        f"compression; acc / acc_int8: after {cfg['finetune_epochs']} fine-tuning epochs (lr "
        f"{cfg['finetune_lr']}), Keras float and int8 TFLite. Latency: median over {cfg['rounds']} interleaved "
        f"rounds of the per-round median of {cfg['runs']} runs (µs), min/max over rounds; speedup: paired "
        f"per-round 1 - t/t_original, median (min, max). Done criteria: {done}. Wall time "
        f"{(time.time() - started) / 60:.1f} min."
    )
    table = write_results(
        stem,
        "Compression to 50 % MACs on Fashion-MNIST (VGG-like CNN)",
        rows,
        columns,
        notes,
        extra={
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "done": done,
            "per_layer": per_layer,
        },
    )
    print(table)
    print(notes)
    return rows, done


if __name__ == "__main__":
    main()
