"""The main job on built-in defaults: train a small CNN on Fashion-MNIST, export it, and show what int8 costs."""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import tflite_export as te

from .callbacks import FreezeBatchNorm, FreezeRanges
from .datasets import fashion_mnist_float
from .models import compile_classifier, small_cnn
from .quantization import calibrate, quantize_model
from .reporting import markdown_table, write_results


@dataclass
class DemoConfig:
    out_dir: str = "artifacts/demo"
    epochs: int = 3
    batch_size: int = 128
    n_train: int | None = None  # all 60,000
    n_test: int | None = None  # all 10,000
    width: int = 16
    seed: int = 0
    latency_runs: int = 200
    qat_epochs: int = 1


def _accuracy(pred, y) -> float:
    return float(np.mean(np.argmax(pred, axis=-1) == y))


def _file_row(name, keras_acc, tflite_bytes, x_test, y_test, model=None, runs=200):
    """Accuracy, size, MACs and latency of one TFLite file (and its agreement with the Keras model)."""
    tfl = te.TFLiteModel(tflite_bytes)
    pred = tfl.predict(x_test)
    row = {"model": name, "keras acc %": 100 * keras_acc, "tflite acc %": 100 * _accuracy(pred, y_test)}
    if model is not None:
        cmp = te.compare(model, tflite_bytes, x_test[:1000])
        row["argmax agree %"] = 100 * cmp.argmax_agreement
        row["within 1 LSB %"] = None if cmp.within_1_lsb is None else 100 * cmp.within_1_lsb
    row["size KB"] = len(tflite_bytes) / 1024
    row["gzip KB"] = len(gzip.compress(tflite_bytes, 9)) / 1024
    row["MACs"] = te.count_macs(tflite_bytes).total_macs
    row["latency µs"] = tfl.latency(runs=runs).median_us
    return row


def run_demo(config: DemoConfig | None = None, stages=None) -> list:
    """Runs the demo and returns its table rows. ``stages`` are extra steps (name, fn(context) -> rows)."""
    cfg = config or DemoConfig()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.perf_counter()
    print("[1/5] Loading Fashion-MNIST", flush=True)
    (x_train, y_train), (x_test, y_test) = fashion_mnist_float(n_train=cfg.n_train, n_test=cfg.n_test)
    print(f"      {len(x_train):,} training and {len(x_test):,} test images", flush=True)

    print(f"[2/5] Training a small CNN for {cfg.epochs} epochs", flush=True)
    model = compile_classifier(small_cnn(width=cfg.width))
    model.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs, validation_split=0.1, verbose=2)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    with te.files.staged_path(out / "float.keras") as tmp:  # written whole or not at all
        model.save(tmp)

    print(f"[3/5] Quantization-aware training for {cfg.qat_epochs} epoch(s)", flush=True)
    qat = compile_classifier(quantize_model(model), learning_rate=2e-4)
    calibrate(qat, x_train[:1024])
    # BatchNorm frozen from the first step: QAT trains the folded graph the int8 file runs, and a step is cheaper (no
    # float pass for batch statistics). Halfway freezing scored the same within noise once gradients flowed through
    # the batch statistics (benchmarks/results/qat.md, notes); ranges are frozen for the last quarter.
    steps = int(np.ceil(0.9 * len(x_train) / cfg.batch_size)) * cfg.qat_epochs
    qat.fit(
        x_train,
        y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.qat_epochs,
        validation_split=0.1,
        verbose=2,
        callbacks=[FreezeBatchNorm(step=0), FreezeRanges(step=(3 * steps) // 4)],
    )
    qat_acc = qat.evaluate(x_test, y_test, verbose=0)[1]
    with te.files.staged_path(out / "qat.keras") as tmp:
        qat.save(tmp)

    print("[4/5] Exporting float, int8 post-training and int8 QAT TFLite", flush=True)
    float_tfl = te.to_tflite(model, quantize=False)
    # the int8 files are the ones a device runs: batch 1 and static shapes
    int8_tfl = te.to_tflite(model, representative_data=x_train[:500], batch_size=1)
    qat_tfl = te.to_tflite(qat, batch_size=1)  # the ranges come from the model itself: no data needed
    te.atomic_write(out / "float.tflite", float_tfl)
    te.atomic_write(out / "int8_ptq.tflite", int8_tfl)
    te.atomic_write(out / "int8_qat.tflite", qat_tfl)

    print("[5/5] Measuring accuracy, agreement, size, MACs and LiteRT latency", flush=True)
    rows = [
        _file_row("float", float_acc, float_tfl, x_test, y_test, model, cfg.latency_runs),
        _file_row("int8 PTQ", float_acc, int8_tfl, x_test, y_test, model, cfg.latency_runs),
        _file_row("int8 QAT", qat_acc, qat_tfl, x_test, y_test, qat, cfg.latency_runs),
    ]
    context = {
        "config": cfg,
        "model": model,
        "qat_model": qat,
        "data": ((x_train, y_train), (x_test, y_test)),
        "out": out,
        "file_row": _file_row,
        "tflite": {"float": float_tfl, "int8 PTQ": int8_tfl, "int8 QAT": qat_tfl},
    }
    for name, stage in stages or ():
        print(f"[+] {name}", flush=True)
        rows.extend(stage(context))

    table = write_results(
        out / "results",
        "keras-eff demo: small CNN on Fashion-MNIST",
        rows,
        notes=f"{cfg.epochs} float epochs, then {cfg.qat_epochs} QAT epoch(s) on top of them "
        f"(BatchNorm frozen from the first QAT step), so the QAT row has trained longer "
        f"than the float row: benchmarks/qat.py compares equal epochs. 'keras acc' is the "
        f"Keras model's own accuracy (the QAT row: the simulation's); agreement and LSBs "
        f"compare each file with the Keras model it came from, on 1,000 test images. LiteRT "
        f"latency is the median of {cfg.latency_runs} batch-1 runs on one thread with "
        f"XNNPACK.",
    )
    print()
    print(table)
    print(f"Artifacts in {out.resolve()} (done in {time.perf_counter() - t0:.0f} s)")
    return rows


def mcu_stage(context, samples: int = 200) -> list:
    """Demo stage: the microcontroller package (C array, arena estimate, TFLite Micro check) and the model report of
    the demo's int8 model, written to ``out/mcu/``. Packages ``context["mcu_model"]`` (a key of
    ``context["tflite"]``), by default the last int8 file added there."""
    files = context["tflite"]
    key = context.get("mcu_model") or [k for k in files if k != "float"][-1]
    (_, _), (x_test, _) = context["data"]
    out = Path(context["out"]) / "mcu"
    pkg = te.micro_package(files[key], name="model", x=x_test[:samples], source_note=f"the keras-eff demo ({key})")
    report = te.model_report(
        files[key],
        float_model=files.get("float"),
        name=f"demo small CNN ({key})",
        latency_runs=context["config"].latency_runs,
        package=pkg,
    )
    pkg.write(out, overwrite=True)
    report.write(out / "report", overwrite=True)
    print(f"      {key}: {pkg}".replace("\n", "\n      "))
    for w in report.warnings:
        print(f"      WARNING: {w}")
    print(f"      C array, op resolver and report in {out}", flush=True)
    return []


__all__ = ["DemoConfig", "mcu_stage", "run_demo", "markdown_table"]
