"""Weight clustering on Fashion-MNIST: 8 / 16 / 32 clusters, and the chain prune 50 % → 16 clusters → QAT.

    python -m benchmarks.clustering            # the full run (~12 min on 2 idle cores, ~25 on a shared machine)
    python -m benchmarks.clustering --quick    # a smoke run (~3 min)

A dense small_cnn is trained; every variant starts from its weights and is fine-tuned for the same number of epochs
with the same cosine learning rate, the unclustered baseline included. Clustered models are clustered with
k-means++ (one set of centroids per kernel, every conv and dense layer), fine-tuned through the centroids and
stripped; their int8 TFLite comes from post-training quantization (representative data). The chain: the 50 % of each
kernel with the smallest magnitude set to zero and fine-tuned with the zeros held (a per-batch mask; the pruning
package is not on this branch), then 16 clusters with ``preserve_sparsity``, then QAT with
``preserve=("sparsity", "clusters")`` and the int8 file from the fake-quant ranges. Accuracy: Keras float accuracy
of the stripped model and accuracy of the int8 TFLite file on the test set; size: the gzip-compressed int8 file;
distinct values: at most, over all int8 kernels, per kernel and per output channel.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_eff
from keras_eff.clustering import cluster_model, clustering_report
from keras_eff.datasets import fashion_mnist_float
from keras_eff.models import compile_classifier, small_cnn
from keras_eff.reporting import write_results
from keras_eff.strip import strip
from tflite_export import TFLiteModel, to_tflite
from tflite_export.files import atomic_savefig

RESULTS = os.path.join(os.path.dirname(__file__), "results")

FULL = dict(n_train=15000, n_test=10000, width=16, dense_epochs=10, tune_epochs=2, qat_epochs=1, clusters=(8, 16, 32))
QUICK = dict(n_train=2000, n_test=1000, width=8, dense_epochs=1, tune_epochs=1, qat_epochs=1, clusters=(8, 16, 32))


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), -1) == y))


def _int8_row(name, float_acc, data, x, y, base_gzip=None):
    report = clustering_report(data)
    acc = float(np.mean(np.argmax(TFLiteModel(data).predict(x), -1) == y))
    row = {
        "variant": name,
        "float acc": round(float_acc * 100, 2),
        "int8 acc": round(acc * 100, 2),
        "int8 gzip bytes": report.gzip_bytes,
        "int8 bytes": report.size_bytes,
        "max distinct / kernel": report.max_distinct,
        "max distinct / channel": report.max_distinct_per_channel,
        "sparsity": f"{report.sparsity:.1%}",
    }
    row["gzip vs unclustered"] = "—" if base_gzip is None else f"{base_gzip / report.gzip_bytes:.2f}× smaller"
    return row, report


def _schedule(cfg, steps, epochs, lr=1e-3):
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps * epochs), alpha=0.05)


class _HoldZeros(keras.callbacks.Callback):
    """Keeps the pruned weights at zero after every step (the chain's stand-in for the pruning package)."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for var, mask in self.masks:
            var.assign(var * mask)


def _magnitude_prune(model, fraction):
    masks = []
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            k = np.asarray(layer.kernel)
            mask = (np.abs(k) > np.quantile(np.abs(k), fraction)).astype("float32")
            layer.kernel.assign(k * mask)
            masks.append((layer.kernel, mask))
    return masks


def run(cfg, stem):
    start = time.time()
    (x, y), (xt, yt) = fashion_mnist_float(n_train=cfg["n_train"], n_test=cfg["n_test"])
    rep = x[:300]
    steps = int(np.ceil(len(x) / 64))
    keras.utils.set_random_seed(1)
    dense = compile_classifier(small_cnn(width=cfg["width"]))
    print(f"training small_cnn(width={cfg['width']}) for {cfg['dense_epochs']} epochs on {len(x)} images")
    dense.fit(x, y, batch_size=64, epochs=cfg["dense_epochs"], verbose=2)
    weights = dense.get_weights()

    def fresh():
        m = small_cnn(width=cfg["width"])
        m.set_weights(weights)
        return m

    rows = []
    row, _ = _int8_row("unclustered, before fine-tuning", _accuracy(dense, xt, yt), to_tflite(dense, rep), xt, yt)
    rows.append(row)
    keras.utils.set_random_seed(2)
    base = compile_classifier(fresh(), _schedule(cfg, steps, cfg["tune_epochs"]))
    base.fit(x, y, batch_size=64, epochs=cfg["tune_epochs"], verbose=2)
    row, base_report = _int8_row("unclustered, fine-tuned", _accuracy(base, xt, yt), to_tflite(base, rep), xt, yt)
    rows.append(row)
    print(row, f"{time.time() - start:.0f} s")
    for k in cfg["clusters"]:
        keras.utils.set_random_seed(2)
        clustered = compile_classifier(cluster_model(fresh(), k), _schedule(cfg, steps, cfg["tune_epochs"]))
        clustered.fit(x, y, batch_size=64, epochs=cfg["tune_epochs"], verbose=2)
        plain = strip(clustered)
        row, _ = _int8_row(
            f"{k} clusters", _accuracy(plain, xt, yt), to_tflite(plain, rep), xt, yt, base_report.gzip_bytes
        )
        rows.append(row)
        print(row, f"{time.time() - start:.0f} s")

    # the chain: prune 50 % → 16 clusters → QAT, each step keeping what the last one made
    keras.utils.set_random_seed(2)
    pruned = compile_classifier(fresh(), _schedule(cfg, steps, 1))
    masks = _magnitude_prune(pruned, 0.5)
    pruned.fit(x, y, batch_size=64, epochs=1, verbose=2, callbacks=[_HoldZeros(masks)])
    clustered = compile_classifier(
        cluster_model(pruned, 16, preserve_sparsity=True), _schedule(cfg, steps, cfg["tune_epochs"])
    )
    clustered.fit(x, y, batch_size=64, epochs=cfg["tune_epochs"], verbose=2)
    plain = strip(clustered)
    qat = compile_classifier(
        keras_eff.quantize_model(plain, preserve=("sparsity", "clusters")),
        _schedule(cfg, steps, cfg["qat_epochs"], 2e-4),
    )
    qat.fit(x, y, batch_size=64, epochs=cfg["qat_epochs"], verbose=2)
    chain_data = to_tflite(qat)
    row, chain_report = _int8_row(
        "prune 50% → 16 clusters → QAT", _accuracy(qat, xt, yt), chain_data, xt, yt, base_report.gzip_bytes
    )
    rows.append(row)
    print(row, f"{time.time() - start:.0f} s")

    columns = [
        "variant",
        "float acc",
        "int8 acc",
        "int8 gzip bytes",
        "gzip vs unclustered",
        "int8 bytes",
        "max distinct / kernel",
        "max distinct / channel",
        "sparsity",
    ]
    notes = (
        f"small_cnn(width={cfg['width']}), {len(x)} training and {len(xt)} test images; dense training "
        f"{cfg['dense_epochs']} epochs, then {cfg['tune_epochs']} fine-tuning epochs for every variant "
        f"(cosine from 1e-3); 'gzip vs unclustered' compares with the fine-tuned unclustered int8 file. "
        f"Clustered variants: int8 by post-training quantization. Chain: magnitude "
        f"zeroing with the zeros held for 1 epoch (stand-in for the pruning package), 16 clusters with "
        f"preserve_sparsity, {cfg['qat_epochs']} QAT epoch(s) with preserve=('sparsity', 'clusters'); float acc "
        f"of the chain is the QAT model's simulated accuracy. Distinct values are those of the int8 kernels "
        f"(per-channel scales on convolutions, so a kernel holds up to k values per channel, k × channels in "
        f"all). Run time {time.time() - start:.0f} s.\n\nChain int8 kernels:\n\n{chain_report}"
    )
    table = write_results(
        stem,
        "Weight clustering on Fashion-MNIST",
        rows,
        columns,
        notes,
        extra={
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "chain_kernels": chain_report.to_dict(),
        },
    )
    _plot(rows, stem + ".png")
    print(table)
    print(chain_report)
    return rows


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["int8 gzip bytes"] / 1024, r["int8 acc"])
        ax.annotate(
            r["variant"],
            (r["int8 gzip bytes"] / 1024, r["int8 acc"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax.set_xlabel("gzip size of the int8 TFLite file (KiB)")
    ax.set_ylabel("int8 test accuracy (%)")
    ax.set_title("Weight clustering, small_cnn on Fashion-MNIST")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    cfg = QUICK if args.quick else FULL
    run(cfg, os.path.join(RESULTS, "clustering_quick" if args.quick else "clustering"))


if __name__ == "__main__":
    main()
