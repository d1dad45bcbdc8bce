"""What pruning and clustering buy on an Arm Ethos-U NPU: flash after Vela's weight compression, NPU cycles, accuracy.

    python -m benchmarks.ethos_u            # the full run (~15 min on 2 idle cores)
    python -m benchmarks.ethos_u --quick    # a smoke run (~3 min)

For a small CNN and a DS-CNN (keras_eff.models), trained on Fashion-MNIST, six variants are fine-tuned from the same
dense weights for the same epochs and learning rate: dense; 50 % pruned; 80 % pruned with log-proportional per-layer
sparsity; 16 clusters; 8 clusters; prune 50 % → 16 clusters → QAT (each step keeping what the last made). Every
variant is exported as a full-int8, batch-1 TFLite file (post-training quantization on 300 images, the chain from its
QAT ranges) and compiled by Vela for the target (default ethos-u55-128 with Vela's default system configuration).
Reported per variant: int8 test accuracy (LiteRT on the int8 file; the Vela file holds the same int8 graph), the
int8 file size and its gzip size, Vela's flash use (command stream + weights after Vela's own compression), Vela's
encoded weight bytes and NPU cycles. Results: benchmarks/results/ethos_u{,_quick}.{md,json,png}.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from tflite_export.files import atomic_savefig

RESULTS = os.path.join(os.path.dirname(__file__), "results")

FULL = dict(n_train=15000, n_test=10000, width=16, dense_epochs=8, tune_epochs=2, qat_epochs=1)
QUICK = dict(n_train=2000, n_test=1000, width=8, dense_epochs=1, tune_epochs=1, qat_epochs=1)


def _rate(steps, epochs, lr=1e-3):
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps * epochs), alpha=0.05)


def _variants(build, weights, cfg, x, y):
    """(name, final Keras model, is_qat) for the six variants, each fine-tuned from ``weights``."""
    import keras_eff as ke
    from keras_eff import pruning as kp
    from keras_eff.clustering import cluster_model
    from keras_eff.models import compile_classifier

    steps = int(np.ceil(len(x) / 64))
    end = steps * cfg["tune_epochs"] - 1

    def fresh():
        m = build(width=cfg["width"])
        m.set_weights(weights)
        return m

    def fit(model, epochs=cfg["tune_epochs"], lr=1e-3, callbacks=()):
        keras.utils.set_random_seed(2)
        compile_classifier(model, _rate(steps, epochs, lr))
        model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=list(callbacks))
        return model

    def pruned(target, distribution="uniform"):
        schedule = kp.PolynomialDecay(0.0, target, begin_step=0, end_step=end, frequency=max(1, steps // 4))
        model = fit(kp.prune_model(fresh(), schedule, distribution=distribution), callbacks=[kp.UpdatePruning()])
        return ke.strip(model)

    yield "dense", fit(fresh()), False
    yield "pruned 50%", pruned(0.5), False
    yield "pruned 80% (log)", pruned(0.8, "log"), False
    for k in (16, 8):
        yield f"{k} clusters", ke.strip(fit(cluster_model(fresh(), k))), False
    half = pruned(0.5)
    clustered = ke.strip(fit(cluster_model(half, 16, preserve_sparsity=True)))
    qat = ke.quantize_model(clustered, preserve=("sparsity", "clusters"))
    ke.calibrate(qat, x[:512])
    yield "prune 50% → 16 clusters → QAT", fit(qat, cfg["qat_epochs"], 2e-4), True


def _row(model_name, variant, data, report, acc, base):
    gz = len(gzip.compress(data, 9))
    row = {
        "model": model_name,
        "variant": variant,
        "int8 acc %": round(100 * acc, 2),
        "Vela flash B": report.flash_bytes,
        "int8 file B": len(data),
        "int8 gzip B": gz,
        "Vela weights B": report.encoded_weight_bytes,
        "NPU cycles": report.cycles,
        "NPU µs": round(report.inference_time_us, 1),
        "CPU ops": len(report.cpu_ops),
    }
    if base is not None:
        row["flash vs dense"] = f"{base['Vela flash B'] / report.flash_bytes:.2f}×"
        row["gzip vs dense"] = f"{base['int8 gzip B'] / gz:.2f}×"
    else:
        row["flash vs dense"] = row["gzip vs dense"] = "1.00×"
    return row


def run(cfg, stem, target):
    import tflite_export as te
    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.models import compile_classifier, ds_cnn, small_cnn
    from keras_eff.reporting import write_results

    start = time.time()
    (x, y), (xt, yt) = fashion_mnist_float(n_train=cfg["n_train"], n_test=cfg["n_test"])
    rep = x[:300]
    rows = []
    for model_name, build in (("small_cnn", small_cnn), ("ds_cnn", ds_cnn)):
        keras.utils.set_random_seed(1)
        dense = compile_classifier(build(width=cfg["width"]))
        print(
            f"[{time.time() - start:4.0f} s] training {model_name}(width={cfg['width']}) for "
            f"{cfg['dense_epochs']} epochs on {len(x):,} images",
            flush=True,
        )
        dense.fit(x, y, batch_size=64, epochs=cfg["dense_epochs"], verbose=0)
        base = None
        for variant, model, is_qat in _variants(build, dense.get_weights(), cfg, x, y):
            data = te.to_tflite(model, None if is_qat else rep, batch_size=1)
            acc = float(np.mean(te.TFLiteModel(data).predict(xt).argmax(-1) == yt))
            report = te.compile_ethos_u(data, target).report
            row = _row(model_name, variant, data, report, acc, base)
            base = base or row
            rows.append(row)
            print(
                f"[{time.time() - start:4.0f} s] {model_name} {variant}: int8 {row['int8 acc %']} %, flash "
                f"{row['Vela flash B']:,} B ({row['flash vs dense']} smaller), gzip {row['int8 gzip B']:,} B, "
                f"{row['NPU cycles']:,} cycles",
                flush=True,
            )
    last = te.compile_ethos_u(data, target).report
    columns = [
        "model",
        "variant",
        "int8 acc %",
        "Vela flash B",
        "flash vs dense",
        "int8 file B",
        "int8 gzip B",
        "gzip vs dense",
        "Vela weights B",
        "NPU cycles",
        "NPU µs",
        "CPU ops",
    ]
    notes = (
        f"Target {target} ({last.system_config}, {last.memory_mode}, {last.clock_hz / 1e6:g} MHz), Vela "
        f"{last.vela_version}. Models at width {cfg['width']}, dense training {cfg['dense_epochs']} epochs on "
        f"{len(x):,} Fashion-MNIST images, then {cfg['tune_epochs']} fine-tuning epochs for every variant "
        f"(cosine from 1e-3), the chain's QAT {cfg['qat_epochs']} epoch(s) from 2e-4; accuracy on {len(xt):,} "
        f"test images. Pruning: PolynomialDecay from 0 over the fine-tuning, conv and dense layers of 1,024 "
        f"weights or more, depthwise kernels left dense. 'Vela flash B' is Vela's flash use (command stream and "
        f"weights after its compression); 'Vela weights B' its encoded weights (with biases and scales); NPU "
        f"cycles and µs are Vela's performance estimate. Run time {time.time() - start:.0f} s."
    )
    table = write_results(
        stem,
        f"Pruning and clustering on an Arm Ethos-U NPU ({target})",
        rows,
        columns,
        notes,
        extra={"config": cfg, "target": target, "vela_version": last.vela_version},
    )
    _plot(rows, stem + ".png", target)
    print(table)
    return rows


def _plot(rows, path, target):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, model_name in zip(axes, ("small_cnn", "ds_cnn")):
        sub = [r for r in rows if r["model"] == model_name]
        for r in sub:
            ax.scatter(r["Vela flash B"] / 1024, r["int8 acc %"], label=r["variant"])
        ax.set_title(f"{model_name} on {target}")
        ax.set_xlabel("flash after Vela (KiB)")
        ax.set_ylabel("int8 test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--target", default="ethos-u55-128", help="Vela accelerator (default: %(default)s)")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    cfg = QUICK if args.quick else FULL
    run(cfg, os.path.join(RESULTS, "ethos_u_quick" if args.quick else "ethos_u"), args.target)


if __name__ == "__main__":
    main()
