"""Coverage: every keras.applications family of issue #17, and a small transformer, through every keras-eff technique.

For each family (keras.applications defaults: weights=None, classes=10, include_top and preprocessing as Keras sets
them; 64 px, 75 for InceptionV3, 71 for Xception; Fashion-MNIST resized and tiled to 3 channels, 0..255 for the
models with preprocessing inside) and a small transformer (tokens-as-features input (16, 32), two pre-LN blocks of
MultiHeadAttention and a GELU MLP):

  (a) ``quantize_model`` → ``calibrate`` (64 training images) → ``to_tflite`` (full int8, int8 I/O, float islands
      refused; peak memory read here) → one fit step (8 images, SGD 1e-4, ``FreezeBatchNorm(step=0)``) →
      ``to_tflite`` again → ``compare`` that file against LiteRT/XNNPACK on 64 test images;
  (b) ``prune_model`` with ``ConstantSparsity(0.5)`` → one fit step with ``UpdatePruning`` → ``strip`` →
      ``quantize_model(preserve="sparsity")`` → ``calibrate`` → ``to_tflite``; each pruned layer's zeros are
      counted in the int8 file;
  (c) ``cluster_model(16)`` → ``strip`` → ``quantize_model(preserve="clusters")`` → ``calibrate`` → ``to_tflite``;
      each clustered layer's distinct values per output channel are counted in the int8 file;
  (d) ``ptq.equalize`` → ``quantize_model`` → ``calibrate`` → ``ptq.adaround`` (a few iterations on the first two
      layers it handles);
  and beside it the TFLite converter's own full-int8 PTQ of the float model (``to_tflite(float_model,
  representative_data=64 images)``), in a process of its own so that its peak memory is its own.

Each family runs in child processes (one for the converter PTQ, one for the keras-eff steps, relaunched for the steps
left when it crashes or times out); a step's failure is recorded as its error class and message. Peak memory is the
child's peak resident set size (``ru_maxrss``), read right after (a)'s first export for keras-eff (quantize, calibrate
and export: the target's scope), and again after the fit step and the second export.

    python -m benchmarks.coverage                       # every family (about an hour on 2 shared cores)
    python -m benchmarks.coverage --quick               # MobileNet, MobileNetV3Small and the transformer
    python -m benchmarks.coverage --families ResNet50,Transformer --out /tmp/cov
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from benchmarks.applications_check import FAMILIES as APP_FAMILIES
from benchmarks.applications_check import MIN_SIZE, RAW_PIXELS
from tflite_export.files import atomic_savefig, atomic_write, read_json

RESULTS = Path(__file__).parent / "results"
FAMILIES = APP_FAMILIES + ("Transformer",)
QUICK = ("MobileNet", "MobileNetV3Small", "Transformer")
STEPS = ("quantize", "prune", "cluster", "adaround")
N_CALIB, N_TEST, N_FIT = 64, 64, 8
ADAROUND_LAYERS, ADAROUND_ITERATIONS = 2, 20


# ---------------------------------------------------------------------------------------------------------- children


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _error(err) -> str:
    text = str(err)
    if "in user code:" in text:  # a tf.function's error: the last line says what went wrong
        text = [line for line in text.splitlines() if line.strip()][-1]
    msg = " ".join(text.split())
    return f"{type(err).__name__}: {msg[:300]}"


def transformer():
    """Tokens as features: (16, 32) → Dense 32 → 2 × [LN, MHA(2 heads, key_dim 16), Add, LN, Dense 64 gelu, Dense 32,
    Add] → GlobalAveragePooling1D → Dense 10 softmax."""
    import keras
    from keras import layers

    inp = keras.Input((16, 32), name="tokens")
    x = layers.Dense(32, name="embed")(inp)
    for i in range(2):
        h = layers.LayerNormalization(name=f"b{i}_ln1")(x)
        h = layers.MultiHeadAttention(num_heads=2, key_dim=16, name=f"b{i}_mha")(h, h)
        x = layers.Add(name=f"b{i}_add1")([x, h])
        h = layers.LayerNormalization(name=f"b{i}_ln2")(x)
        h = layers.Dense(64, activation="gelu", name=f"b{i}_mlp1")(h)
        h = layers.Dense(32, name=f"b{i}_mlp2")(h)
        x = layers.Add(name=f"b{i}_add2")([x, h])
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(10, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="transformer")


def size_of(family) -> int | None:
    return None if family == "Transformer" else max(64, MIN_SIZE.get(family, 32))


def build(family):
    import keras

    keras.utils.set_random_seed(0)
    if family == "Transformer":
        return transformer()
    s = size_of(family)
    return getattr(keras.applications, family)(weights=None, classes=10, input_shape=(s, s, 3))


def data(family):
    """(x_calib, y_calib), x_test: Fashion-MNIST, resized and tiled to 3 channels (0..255 where the model holds its
    own preprocessing), or resized to 16 × 32 single-channel 'tokens' for the transformer."""
    import tensorflow as tf

    from keras_eff.datasets import fashion_mnist_float

    (x_tr, y_tr), (x_te, _) = fashion_mnist_float(n_train=N_CALIB, n_test=N_TEST)
    if family == "Transformer":
        shape = lambda x: tf.image.resize(x, (16, 32)).numpy()[..., 0].astype(np.float32)  # noqa: E731
    else:
        s = size_of(family)
        scale = 255.0 if family in RAW_PIXELS else 1.0
        shape = lambda x: (np.repeat(tf.image.resize(x, (s, s)).numpy(), 3, -1) * scale).astype(np.float32)  # noqa: E731
    return shape(x_tr), y_tr, shape(x_te)


class _Recorder:
    """keras_model stand-in for ``tflite_export.compare`` that keeps the Keras outputs, so the bit-exact share can be
    computed from the same run. It calls the model eagerly: ``predict`` traces the integer-emulation graph first
    (ConvNeXtTiny: 44,000 ops, 80 s to trace and optimize, then 0.7 s a batch), while the eager call takes 5 s for
    the 64 images and gives the same values (max difference 0.0, measured)."""

    def __init__(self, model):
        self.model, self.out = model, None

    def predict(self, x, **kwargs):
        self.out = np.asarray(self.model(x, training=False))
        return self.out


def _int8_export(te, model, rep, row, key):
    """Strict full-int8 export (float islands refused); on a FloatIslandError the file with its float ops is made
    too (``allow_float``) and marked so. Returns the bytes or None."""
    try:
        kwargs = {} if rep is None else {"representative_data": rep}
        blob = te.to_tflite(model, **kwargs)
        row[key] = "full int8"
        return blob
    except Exception as err:  # noqa: BLE001 - the row records what went wrong
        row[key] = _error(err)
        row[key + "_traceback"] = traceback.format_exc()[-1500:]
        if type(err).__name__ != "FloatIslandError":
            return None
    try:
        blob = te.to_tflite(model, allow_float=True, **kwargs)
        row[key + "_allow_float"] = "exported with allow_float=True"
        return blob
    except Exception as err:  # noqa: BLE001
        row[key + "_allow_float"] = _error(err)
        return None


def step_quantize(model, x_cal, y_cal, x_test, row):
    import keras

    import keras_eff as ke
    import tflite_export as te

    t0 = time.perf_counter()
    t = time.perf_counter()
    qat = ke.quantize_model(model)
    row["quantize_s"] = round(time.perf_counter() - t, 2)
    report = ke.quantization.quantization_report(qat)
    row["quantized"] = len(report.quantized)
    row["kept_float"] = len(report.float_layers)
    row["float_layers"] = [f"{n} ({r})" for n, r in report.float_layers][:40]
    t = time.perf_counter()
    ke.calibrate(qat, x_cal, progress=False)
    row["calibrate_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    calibrated = _int8_export(te, qat, None, row, "export_calibrated")
    row["export_s"] = round(time.perf_counter() - t, 2)
    row["quantize_export_s"] = round(time.perf_counter() - t0, 2)
    row["peak_mib"] = _peak_mib()  # quantize + calibrate + export: the memory target's scope
    if calibrated is not None:
        row["bytes_calibrated"] = len(calibrated)
    del calibrated
    # one QAT step, then the file again: parity is measured on ranges and weights training moved
    qat.compile(optimizer=keras.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    t = time.perf_counter()
    qat.fit(
        x_cal[:N_FIT],
        y_cal[:N_FIT],
        batch_size=N_FIT,
        epochs=1,
        verbose=0,
        callbacks=[ke.callbacks.FreezeBatchNorm(step=0)],
    )
    row["fit_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    blob = _int8_export(te, qat, None, row, "export")
    row["export_after_fit_s"] = round(time.perf_counter() - t, 2)
    row["peak_after_fit_mib"] = _peak_mib()  # with the training step's graph and the second export
    if blob is None:
        return
    row["bytes"] = len(blob)
    row["bytes_per_param"] = round(len(blob) / row["params"], 4)
    t = time.perf_counter()
    rec = _Recorder(qat)
    tfl = te.TFLiteModel(blob)
    out = tfl.outputs[0]
    raw = np.asarray(tfl.predict(x_test, batch_size=16, dequantize_outputs=False))
    cmp = te.compare(rec, blob, x_test, batch_size=16, tflite_outputs=raw)
    row.update(
        argmax=cmp.argmax_agreement,
        within_1_lsb=cmp.within_1_lsb,
        max_lsb=cmp.max_lsb_diff,
        max_abs_diff=cmp.max_abs_diff,
    )
    if out["dtype"] == np.int8:
        scale, zp = out["quantization"]
        q_ref = te.runtime.quantize(rec.out.reshape(len(x_test), -1), scale, zp).astype(np.int32)
        row["bit_exact"] = float(np.mean(q_ref == raw.reshape(len(x_test), -1).astype(np.int32)))
    row["compare_s"] = round(time.perf_counter() - t, 2)


def _keras_eff_int8(ke, te, stripped, x_cal, preserve, row, key):
    """``quantize_model(stripped, preserve=...)`` → ``calibrate`` → strict full-int8 export; the bytes or None."""
    q = ke.quantize_model(stripped, preserve=preserve)
    ke.calibrate(q, x_cal, progress=False)
    return _int8_export(te, q, None, row, key)


def _kernels_in_file(ke, model, blob, layer_names) -> list:
    """``(Keras kernel, its int8 filter in the file or None)`` for every kernel of the named layers of ``model``
    (both kernels of a SeparableConv2D), as ``KernelStats`` of ``clustering_report``. A kernel's filter is the one
    of equal size whose tensor name holds the layer's name (``model_1/quant_<layer>_1/convolution``; the size tells
    a layer ``conv``, uniquified as ``conv_1``, from a layer ``conv_1``)."""
    in_file = ke.clustering_report(blob).kernels  # every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED filter
    pairs = []
    for kernel in ke.clustering_report(model).kernels:  # named "<layer>/<kernel>"
        layer = kernel.name.rsplit("/", 1)[0]
        if layer not in layer_names:
            continue
        size, pattern = int(np.prod(kernel.shape)), re.compile(rf"(^|/)(quant_)?{re.escape(layer)}(_\d+)?/")
        match = (f for f in in_file if int(np.prod(f.shape)) == size and pattern.search(f.name.split(":", 1)[-1]))
        pairs.append((kernel, next(match, None)))
    return pairs


def step_prune(model, x_cal, y_cal, x_test, row):
    import keras

    import keras_eff as ke
    import tflite_export as te

    pruned = ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0, frequency=1))
    pruned.compile(optimizer=keras.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
    pruned.fit(
        x_cal[:N_FIT], y_cal[:N_FIT], batch_size=N_FIT, epochs=1, verbose=0, callbacks=[ke.callbacks.UpdatePruning()]
    )
    pruned_layers = {r["layer"] for r in ke.sparsity_report(pruned).rows if r["status"] == "pruned"}
    stripped = ke.strip(pruned)
    row["prune_sparsity"] = round(float(ke.sparsity_report(stripped).total_sparsity), 4)
    blob = _keras_eff_int8(ke, te, stripped, x_cal, "sparsity", row, "prune_export")
    if blob is not None:
        row["prune_bytes"] = len(blob)
        # a pruned weight is an int8 zero (weights are symmetric); rounding may add zeros, never remove one
        pairs = _kernels_in_file(ke, stripped, blob, pruned_layers)
        row["prune_kernels"] = len(pairs)
        row["prune_file_kernels"] = sum(
            f is not None and round(f.sparsity * np.prod(f.shape)) >= round(k.sparsity * np.prod(k.shape))
            for k, f in pairs
        )


def step_cluster(model, x_cal, y_cal, x_test, row):
    import keras_eff as ke
    import tflite_export as te

    clustered = ke.cluster_model(model, 16)
    clustered_layers = set(ke.clustering_report(clustered).clustered_layers)
    row["cluster_layers"] = len(clustered_layers)
    stripped = ke.strip(clustered)
    kernels = [k for k in ke.clustering_report(stripped).kernels if k.name.rsplit("/", 1)[0] in clustered_layers]
    row["cluster_max_values"] = max((k.distinct for k in kernels), default=None)
    blob = _keras_eff_int8(ke, te, stripped, x_cal, "clusters", row, "cluster_export")
    if blob is not None:
        row["cluster_bytes"] = len(blob)
        # per-channel scales (and a folded BatchNorm's per-channel factor) keep the 16 values in each output channel
        pairs = _kernels_in_file(ke, stripped, blob, clustered_layers)
        row["cluster_kernels"] = len(pairs)
        row["cluster_file_kernels"] = sum(f is not None and f.max_distinct_per_channel <= 16 for _, f in pairs)


def _adaround_layers(q, n):
    """The first ``n`` quantized layers AdaRound handles (None: let it pick, when the helper moved)."""
    try:
        from keras_eff.ptq import common

        names = [
            w.layer.name
            for w in common.quantized_layers(q)
            if common.supported_reason(w) is None and w.batchnorm is None
        ]
        return tuple(names[:n]) or None
    except Exception:  # noqa: BLE001 - internal helpers; fall back to all layers
        return None


def step_adaround(model, x_cal, y_cal, x_test, row):
    import keras_eff as ke
    from keras_eff import ptq

    t = time.perf_counter()
    eq = ptq.equalize(model)
    row["equalize_s"] = round(time.perf_counter() - t, 2)
    rep = ke.get_report(eq, "equalization")
    row["equalize_pairs"] = len(rep.pairs)
    row["equalize_folded_bn"] = len(rep.folded_batchnorm)
    row["equalize"] = "ok"
    t = time.perf_counter()
    q = ke.quantize_model(eq)
    ke.calibrate(q, x_cal, progress=False)
    layers = _adaround_layers(q, ADAROUND_LAYERS)
    q = ptq.adaround(
        q, x_cal, iterations=ADAROUND_ITERATIONS, batch_size=16, max_samples=N_CALIB, layers=layers, float_model=eq
    )
    row["adaround_s"] = round(time.perf_counter() - t, 2)
    ada = ke.get_report(q, "adaround")
    row["adaround_layers"] = sorted(ada.layers)
    row["adaround_skipped"] = len(ada.skipped)


STEP_FUNCS = {"quantize": step_quantize, "prune": step_prune, "cluster": step_cluster, "adaround": step_adaround}


def _write(path, row):
    atomic_write(path, json.dumps(row, default=str))


def child_keras_eff(family, steps, out):
    t0 = time.perf_counter()
    row = read_json(out, "coverage row") if os.path.exists(out) else {}
    model = build(family)
    x_cal, y_cal, x_test = data(family)
    row["params"] = int(model.count_params())
    row["base_mib"] = _peak_mib()
    for step in steps:
        row["running"] = step
        _write(out, row)
        t = time.perf_counter()
        try:
            STEP_FUNCS[step](model, x_cal, y_cal, x_test, row)
            row.setdefault(f"{step}_ok", "ok")
        except Exception as err:  # noqa: BLE001 - the row records what went wrong
            row[f"{step}_ok"] = _error(err)
            row[f"{step}_traceback"] = traceback.format_exc()[-2000:]
        row[f"{step}_step_s"] = round(time.perf_counter() - t, 2)
        row[f"{step}_peak_mib"] = _peak_mib()
        row.pop("running", None)
        _write(out, row)
    row["child_s"] = round(row.get("child_s", 0) + time.perf_counter() - t0, 2)
    _write(out, row)


def child_converter(family, out):
    import tflite_export as te

    t0 = time.perf_counter()
    model = build(family)
    x_cal, _, _ = data(family)
    row = {"params": int(model.count_params()), "base_mib": _peak_mib()}
    _write(out, row)
    t = time.perf_counter()
    blob = _int8_export(te, model, x_cal, row, "export")
    row["seconds"] = round(time.perf_counter() - t, 2)
    row["peak_mib"] = _peak_mib()
    if blob is not None:
        row["bytes"] = len(blob)
    row["child_s"] = round(time.perf_counter() - t0, 2)
    _write(out, row)


# ------------------------------------------------------------------------------------------------------------ parent


def _run_child(args, out, timeout, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "benchmarks.coverage", "--child", *args, "--child-out", out]
    t = time.perf_counter()
    with open(log, "a") as f:
        try:
            proc = subprocess.run(
                cmd,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
            )
            status = "ok" if proc.returncode == 0 else f"exit code {proc.returncode}"
            if proc.returncode < 0:
                status = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
        except subprocess.TimeoutExpired:
            status = f"timeout after {timeout} s"
    row = read_json(out, "coverage row") if os.path.exists(out) else {}
    return row, status, time.perf_counter() - t


def run_family(family, workdir, timeout):
    log = os.path.join(workdir, f"{family}.log")
    t0 = time.perf_counter()
    conv_out = os.path.join(workdir, f"{family}.converter.json")
    conv, conv_status, conv_s = _run_child(["converter", family], conv_out, timeout, log)
    if conv_status != "ok":
        conv.setdefault("export", f"child {conv_status}")
        if "export" in conv and conv.get("bytes") is None and not conv["export"].startswith(("child", "Float")):
            conv["export"] += f" (child {conv_status})"
    ke_out = os.path.join(workdir, f"{family}.keras_eff.json")
    todo, deadline, launches = list(STEPS), time.perf_counter() + 2 * timeout, 0
    row = {}
    while todo and launches < len(STEPS) and time.perf_counter() < deadline:
        launches += 1
        row, status, _ = _run_child(
            ["keras_eff", family, "--steps", ",".join(todo)], ke_out, max(60, int(deadline - time.perf_counter())), log
        )
        if status == "ok":
            break
        done = {s for s in STEPS if f"{s}_ok" in row}
        crashed = row.pop("running", None)
        if crashed is None:  # died before the first step (building the model, loading data) or after the last
            crashed = next((s for s in todo if s not in done), None)
            if crashed is None:
                break
        row[f"{crashed}_ok"] = f"child {status} during this step"
        if crashed == "quantize":
            row.setdefault("export", f"child {status}")
        _write(ke_out, row)
        todo = [s for s in todo if s not in {k[:-3] for k in row if k.endswith("_ok")}]
    for s in todo:
        row.setdefault(f"{s}_ok", "not run (family time budget spent)")
    row["family"] = family
    row["size"] = size_of(family) or "16×32"
    row["converter"] = conv
    row["converter_child"] = conv_status
    row["total_s"] = round(time.perf_counter() - t0, 1)
    row["launches"] = launches
    return row


def _short(text, n=60):
    if text is None:
        return "–"
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _pct(v, digits=2):
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def _ok(v):
    return "ok" if v == "ok" else f"**{_short(v, 70)}**" if v else "–"


def _prune_kept(r) -> bool:
    """Every pruned kernel's filter in the int8 file holds at least as many zeros as the kernel after strip."""
    return r.get("prune_file_kernels", -1) == r.get("prune_kernels")


def _clusters_kept(r) -> bool:
    """Every clustered kernel's filter in the int8 file holds at most 16 values in each output channel."""
    return r.get("cluster_file_kernels", -1) == r.get("cluster_kernels")


def _export_cell(r, step, kept, lost, detail):
    """The prune50 / cluster16 cell: "ok", what was lost in the int8 file, or the export's error; then ``detail``.
    A step that failed before its export: its error alone."""
    if r.get(f"{step}_ok") != "ok":
        return r.get(f"{step}_ok")
    export = r.get(f"{step}_export")
    head = ("ok" if kept else f"**{lost}**") if export == "full int8" else _short(export, 70)
    return f"{head} ({detail})"


def table_row(r):
    conv = r.get("converter", {})
    # the file of the calibrated model: the same weights as the float model the converter quantizes (after the fit
    # step, biases that were equal zeros no longer share one buffer)
    ke_bytes, c_bytes = r.get("bytes_calibrated", r.get("bytes")), conv.get("bytes")
    export = r.get("export", "–")
    if export != "full int8" and r.get("export_allow_float"):
        export = f"{export} [with allow_float: {'file' if r.get('bytes') else r['export_allow_float']}]"
    c_export = conv.get("export", "–")
    if c_export != "full int8" and conv.get("export_allow_float"):
        c_export = f"{c_export} [allow_float: {'file' if c_bytes else conv['export_allow_float']}]"
    size_vs = None if not (ke_bytes and c_bytes) else 100.0 * (ke_bytes / c_bytes - 1)
    prune = _export_cell(
        r,
        "prune",
        _prune_kept(r),
        "zeros lost in the file",
        f"{_pct(r.get('prune_sparsity'), 0)} zeros; int8 file: {r.get('prune_file_kernels')} of "
        f"{r.get('prune_kernels')} kernels keep them",
    )
    cluster = _export_cell(
        r,
        "cluster",
        _clusters_kept(r),
        "clusters lost in the file",
        f"{r.get('cluster_layers')} layers, ≤ {r.get('cluster_max_values')} values; int8 file: "
        f"{r.get('cluster_file_kernels')} of {r.get('cluster_kernels')} kernels ≤ 16 a channel",
    )
    ada = r.get("adaround_ok")
    if ada == "ok":
        ada = (
            f"ok ({r.get('equalize_pairs')} pairs; {len(r.get('adaround_layers', []))} layers, "
            f"{r.get('equalize_s', 0) + r.get('adaround_s', 0):.0f} s)"
        )
    peak, c_peak = r.get("peak_mib"), conv.get("peak_mib")
    return {
        "family": r["family"],
        "params": r.get("params"),
        "quantized / kept float": f"{r.get('quantized', '–')} / {r.get('kept_float', '–')}",
        "export": "full int8" if export == "full int8" else _short(export, 110),
        "within 1 LSB": _pct(r.get("within_1_lsb")),
        "bit-exact": _pct(r.get("bit_exact")),
        "max LSB": r.get("max_lsb"),
        "argmax": _pct(r.get("argmax"), 1),
        "file bytes / params": None if r.get("bytes_per_param") is None else f"{r['bytes_per_param']:.3f}",
        "quantize s": r.get("quantize_s"),
        "quantize+export s": r.get("quantize_export_s"),
        "total s": r.get("total_s"),
        "peak MiB": peak,
        "peak MiB after fit": r.get("peak_after_fit_mib"),
        "prune50": prune if prune == "ok" or (prune or "").startswith("ok") else f"**{_short(prune, 90)}**",
        "cluster16": cluster if (cluster or "").startswith("ok") else f"**{_short(cluster, 90)}**",
        "equalize+adaround": ada if (ada or "").startswith("ok") else f"**{_short(ada, 90)}**",
        "converter PTQ": "full int8" if c_export == "full int8" else _short(c_export, 90),
        "converter bytes": c_bytes,
        "size vs converter": None
        if size_vs is None
        else f"{size_vs:+.2f} %"
        + ("" if export == "full int8" and c_export == "full int8" else " (files with float ops)"),
        "converter peak MiB": c_peak,
        "peak vs converter": None if not (peak and c_peak) else f"{peak / c_peak:.2f}×",
    }


COLUMNS = [
    "family",
    "params",
    "quantized / kept float",
    "export",
    "within 1 LSB",
    "bit-exact",
    "max LSB",
    "argmax",
    "file bytes / params",
    "quantize s",
    "quantize+export s",
    "total s",
    "peak MiB",
    "peak MiB after fit",
    "prune50",
    "cluster16",
    "equalize+adaround",
    "converter PTQ",
    "converter bytes",
    "size vs converter",
    "converter peak MiB",
    "peak vs converter",
]


def summary(rows, wall_min=None):
    full = [r for r in rows if r.get("export") == "full int8"]
    exact = [r for r in full if r.get("max_lsb") is not None and r["max_lsb"] <= 1 and r.get("bit_exact", 0) >= 0.999]
    conv_full = [r for r in rows if r.get("converter", {}).get("export") == "full int8"]
    out = {
        "families": len(rows),
        "keras_eff_full_int8": len(full),
        "converter_full_int8": len(conv_full),
        "parity_met (≥99.9 % bit-exact, max 1 LSB)": len(exact),
        "prune_ok (full int8, the zeros kept)": sum(
            r.get("prune_ok") == "ok" and r.get("prune_export") == "full int8" and _prune_kept(r) for r in rows
        ),
        "cluster_ok (full int8, ≤ 16 values a channel kept)": sum(
            r.get("cluster_ok") == "ok" and r.get("cluster_export") == "full int8" and _clusters_kept(r) for r in rows
        ),
        "adaround_ok": sum(r.get("adaround_ok") == "ok" for r in rows),
    }
    if wall_min is not None:
        out["wall minutes of the run (target ≤ 30)"] = round(wall_min, 1)
    out["minutes of the rows, summed"] = round(sum(r.get("total_s", 0) for r in rows) / 60, 1)
    res = next((r for r in rows if r["family"] == "ResNet50"), None)
    if res and res.get("quantize_s") is not None:
        out["ResNet50 quantize_model s (target ≤ 10)"] = res["quantize_s"]
    sizes = {
        r["family"]: round(100 * (r.get("bytes_calibrated", r["bytes"]) / r["converter"]["bytes"] - 1), 2)
        for r in full
        if r.get("bytes") and r.get("converter", {}).get("export") == "full int8"
    }
    if sizes:
        out["size vs converter % where both are full int8 (target within ±2)"] = sizes
        out["size target met"] = [f for f, v in sizes.items() if abs(v) <= 2]
        out["size target missed"] = [f for f, v in sizes.items() if abs(v) > 2]
    mem = {
        r["family"]: round(r["peak_mib"] / r["converter"]["peak_mib"], 2)
        for r in rows
        if r.get("peak_mib") and r.get("converter", {}).get("peak_mib")
    }
    if mem:
        out["peak memory vs converter × (target ≤ 2)"] = mem
        out["memory target missed"] = [f for f, v in mem.items() if v > 2]
    return out


def _longest_first(families):
    """``families`` in the order that finishes soonest with several jobs: the longest first, by their seconds in the
    committed results (the listed order where there are none)."""
    try:
        seconds = {r["family"]: r.get("total_s", 0) for r in read_json(f"{RESULTS / 'coverage'}.json", "")["rows"]}
    except Exception:  # noqa: BLE001 - no committed results (or unreadable ones): keep the order given
        seconds = {}
    return sorted(families, key=lambda f: -seconds.get(f, 0))


def _git(*args) -> str | None:
    """What ``git args`` prints in this checkout, stripped (None where git cannot run)."""
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
        ).stdout.strip()
    except OSError:
        return None


def _tree_state():
    """Whether the code that ran is the commit's: "clean" or "with uncommitted changes"."""
    # (the results files are the run's own output)
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    return "unknown" if dirty is None else "with uncommitted changes" if dirty else "clean"


def _commit():
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def write(rows, stem, meta):
    from keras_eff.reporting import markdown_table, versions
    from tflite_export.files import atomic_write_json

    ver = versions()
    summ = summary(rows, meta.get("wall_min"))
    table = markdown_table([table_row(r) for r in rows], COLUMNS)
    loads = meta["loadavg"]
    by_commit = {}
    for r in rows:
        by_commit.setdefault(r.get("commit", "?"), []).append(r["family"])
    moved = (
        ""
        if len(by_commit) < 2
        else (
            "; HEAD moved during the run, families by the commit at their start: "
            + "; ".join(f"`{c}`: {', '.join(f)}" for c, f in by_commit.items())
        )
    )
    resumed = (
        ""
        if not meta.get("resumed")
        else (
            "; the run was stopped from outside (SIGTERM to its processes) and resumed with `--resume`, rerunning the "
            "interrupted family from the start; its minutes of running count the finished families only"
        )
    )
    failures = []
    for r in rows:
        for key, label in (
            ("export_calibrated", "export before the fit step"),
            ("export", "export"),
            ("quantize_ok", "quantize step"),
            ("prune_ok", "prune"),
            ("prune_export", "prune export"),
            ("cluster_ok", "cluster"),
            ("cluster_export", "cluster export"),
            ("adaround_ok", "equalize+adaround"),
        ):
            v = r.get(key)
            if v not in (None, "ok", "full int8"):
                failures.append(f"- {r['family']}, {label}: `{v}`")
        if r.get("bit_exact") is not None and (r["bit_exact"] < 0.999 or (r.get("max_lsb") or 0) > 1):
            failures.append(
                f"- {r['family']}, simulation vs file below the criterion (≥ 99.9 % bit-exact, max 1 "
                f"LSB): {r['bit_exact']:.2%} bit-exact, {r.get('within_1_lsb', 0):.2%} within 1 LSB, "
                f"max {r.get('max_lsb')} LSB, argmax {r.get('argmax', 0):.1%}"
            )
        c = r.get("converter", {}).get("export")
        if c not in (None, "full int8"):
            failures.append(f"- {r['family']}, converter PTQ: `{c}`")
        if r.get("float_layers"):
            failures.append(
                f"- {r['family']}, kept float: {', '.join(r['float_layers'][:8])}"
                + (" …" if len(r["float_layers"]) > 8 else "")
            )
    jobs = meta.get("jobs", 1)
    jobs_note = (
        ""
        if jobs == 1
        else f"; {jobs} families ran at the same time (`--jobs {jobs}`), each row's seconds with another family "
        "beside it"
    )
    title = "Coverage: keras.applications families and a small transformer through every keras-eff technique"
    md = f"""# {title} (issue #17)

- Command: `{meta["command"]}`
- Code: commit `{meta["commit"]}` (`git rev-parse --short HEAD`), working tree {meta.get("tree", "unknown")}{moved}
- Date: {meta["started"]} – {meta["finished"]} ({meta["wall_min"]:.0f} min of running{resumed})
- Versions: keras {ver.get("keras")}, tensorflow {ver.get("tensorflow")}, ai-edge-litert {ver.get("ai-edge-litert")},
  numpy {ver.get("numpy")}, Python {ver.get("python")}
- Machine: {meta["machine"]}, {os.cpu_count()} CPU cores, no GPU: 1-minute load average
  {loads["min"]:.1f}–{loads["max"]:.1f} (median {loads["median"]:.1f}) at the family starts (2.0 = both cores busy;
  this run's own {jobs} at a time account for about {jobs}.0 of it, more is other work sharing the machine, which
  makes the seconds pessimistic){jobs_note}

Per family: keras.applications with its default arguments (weights=None, classes=10; 64 px, 75 for InceptionV3, 71
for Xception), or the transformer (input (16, 32), Dense 32, 2 × [LayerNormalization, MultiHeadAttention(2 heads,
key_dim 16), Add, LayerNormalization, Dense 64 gelu, Dense 32, Add], GlobalAveragePooling1D, Dense 10 softmax).
Data: {N_CALIB} Fashion-MNIST training images (calibration, representative data) and {N_TEST} test images, resized
(and tiled to 3 channels; 0..255 for the models with a Rescaling/Normalization inside, else 0..1).

- **quantize + export**: `quantize_model` → `calibrate` ({N_CALIB} images) → `to_tflite` (full int8, int8 I/O) →
  one fit step ({N_FIT} images, SGD 1e-4, `FreezeBatchNorm(step=0)`) → `to_tflite` again (a float island is refused,
  and then the file is also made with `allow_float=True` for its size and parity, marked "[with allow_float]") →
  `compare` that file against LiteRT with XNNPACK on {N_TEST} test images (the Keras model called eagerly, which
  gives `predict`'s values without tracing its integer-emulation graph). "within 1 LSB", "bit-exact", "max LSB":
  over the {N_TEST} × 10 int8 outputs; "argmax": agreement of the {N_TEST} predictions. "quantize s":
  `quantize_model` alone; "quantize+export s": quantize, calibrate and the first export; "total s": the family's
  whole row, both child processes (imports included). "peak MiB": the keras-eff child's peak RSS right after the
  first export (its imports and the float model included: the target's scope, quantize + export); "peak MiB after
  fit": after the fit step and the second export. "size vs converter" compares the first file (the calibrated
  model: the same weights the converter quantizes) with the converter's.
- **prune50**: `prune_model(ConstantSparsity(0.5))` → one fit step with `UpdatePruning` → `strip` →
  `quantize_model(stripped, preserve="sparsity")` → `calibrate` → `to_tflite` (full int8, float islands refused); the
  share is the zeros over all prunable kernels; "int8 file: K of N kernels keep them": the pruned kernels whose
  filter in the file holds at least as many int8 zeros as the stripped kernel has zeros.
- **cluster16**: `cluster_model(16)` → `strip` → `quantize_model(stripped, preserve="clusters")` → `calibrate` →
  `to_tflite`; "≤ N values": most distinct values in one clustered kernel after strip; "int8 file: K of N kernels
  ≤ 16 a channel": the clustered layers' kernels whose filter in the file holds at most 16 int8 values in every
  output channel.
- (Up to commit e6a0f0f these two columns exported the stripped model by the converter's own PTQ,
  `to_tflite(stripped, representative_data=...)`: full int8 for 13 families; ConvNeXtTiny's and the transformer's
  LayerNormalization kept a float NEG, as the converter PTQ column shows for the float model.)
- **equalize+adaround**: `ptq.equalize` → `quantize_model` → `calibrate` → `ptq.adaround` ({ADAROUND_ITERATIONS}
  iterations on the first {ADAROUND_LAYERS} layers it handles); pairs: layer pairs equalized.
- **converter PTQ**: the TFLite converter's own full-int8 PTQ of the float model (`to_tflite(float_model,
  representative_data={N_CALIB} images)`, same float-island check), in a separate process: "converter peak MiB" is
  that process's peak RSS, so "peak vs converter" compares the two processes (same imports, model and data).

{table}
## Headline

{chr(10).join(f"- {k}: {v}" for k, v in summ.items())}

Targets (issue #17): `quantize_model` on ResNet50 ≤ 10 s; int8 file within 2 % of the converter's PTQ file; peak
memory of quantize + export ≤ 2× the converter PTQ's.

## Failures, errors and float layers

{chr(10).join(failures) or "(none)"}

Full error messages and tracebacks are in `coverage.json` (rows[*], keys ending in `_ok`, `_export`,
`_traceback`).
"""
    atomic_write(f"{stem}.md", md)
    atomic_write_json(
        f"{stem}.json",
        {
            "title": "coverage",
            "meta": meta,
            "versions": ver,
            "summary": summ,
            "columns": COLUMNS,
            "table": [table_row(r) for r in rows],
            "rows": rows,
        },
    )
    return table, summ


def plot(rows, path):
    from keras_eff.reporting import agg_subplots

    rows = [r for r in rows if r.get("peak_mib") or r.get("converter", {}).get("peak_mib")]
    if not rows:
        return
    fig, ax = agg_subplots((9, 4.5))
    idx = np.arange(len(rows))
    ax.bar(idx - 0.2, [r.get("peak_mib") or 0 for r in rows], 0.4, label="keras-eff quantize + export")
    ax.bar(idx + 0.2, [r.get("converter", {}).get("peak_mib") or 0 for r in rows], 0.4, label="converter PTQ")
    ax.set_xticks(idx, [r["family"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("Peak memory per family, keras-eff vs the TFLite converter's PTQ")
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", help="comma-separated subset of: " + ", ".join(FAMILIES))
    p.add_argument("--quick", action="store_true", help="only " + ", ".join(QUICK) + " (checks the script)")
    p.add_argument(
        "--timeout",
        type=int,
        default=1200,
        help="seconds per child process (default 1200; the keras-eff steps of a family get twice that in "
        "all, over relaunches)",
    )
    p.add_argument(
        "--out",
        help="result stem (default benchmarks/results/coverage; a --quick or --families run "
        "writes to its temporary folder unless given)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished families of the result stem's JSON (from an interrupted run) and run the rest",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="families run at the same time, each in its own child processes (default 2: most of a family's time "
        "is TensorFlow tracing graphs on one Python thread, so two share the 2 cores here well)",
    )
    p.add_argument("--child", nargs=2, metavar=("PART", "FAMILY"), help=argparse.SUPPRESS)
    p.add_argument("--steps", default=",".join(STEPS), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        part, family = args.child
        if part == "converter":
            child_converter(family, args.child_out)
        else:
            child_keras_eff(family, [s for s in args.steps.split(",") if s], args.child_out)
        return None

    families = QUICK if args.quick else FAMILIES
    if args.families:
        families = tuple(f.strip() for f in args.families.split(",") if f.strip())
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            p.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    workdir = tempfile.mkdtemp(prefix="keras_eff_coverage_")
    # a quick or partial run does not overwrite the committed table unless --out says so
    stem = args.out or (os.path.join(workdir, "coverage") if args.quick or args.families else str(RESULTS / "coverage"))
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
    command = ("python -m benchmarks.coverage " + " ".join(given)).rstrip()
    start = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    commit_start = _commit()
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    loads, rows, earlier_min, resumed, old_meta = {}, [], 0.0, 0, None
    if args.resume and os.path.exists(f"{stem}.json"):
        old = read_json(f"{stem}.json", "coverage results")
        old_meta = old["meta"]
        rows = [r for r in old.get("rows", []) if r.get("family") in families]
        at = old["meta"]["loadavg"].get("at_family_start", {})
        loads = {r["family"]: at[r["family"]] for r in rows if r["family"] in at}
        start = datetime.datetime.strptime(old["meta"]["started"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=datetime.UTC)
        earlier_min, resumed = old["meta"].get("wall_min", 0.0), old["meta"].get("resumed", 0) + 1
        commit_start = old["meta"].get("commit_start", commit_start)
        print(f"resuming: {', '.join(r['family'] for r in rows) or 'nothing'} done", flush=True)
    done = {r["family"] for r in rows}
    print(f"logs and per-family JSON in {workdir}", flush=True)

    def run_one(family):
        load = os.getloadavg()[0]
        print(f"{family}: load {load:.1f} …", flush=True)
        commit_family = _commit()
        row = run_family(family, workdir, args.timeout)
        row["commit"] = commit_family  # HEAD when the family started (the code changes in parallel)
        return family, load, row

    order = {f: i for i, f in enumerate(families)}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running = [pool.submit(run_one, f) for f in _longest_first([f for f in families if f not in done])]
        for future in as_completed(running):
            family, loads[family], row = future.result()
            rows = sorted([*rows, row], key=lambda r: order[r["family"]])
            tr = table_row(row)
            print(f"{family}: " + "; ".join(f"{k} {v}" for k, v in tr.items() if k != "family"), flush=True)
            commit_now = _commit()
            at_start = {r["family"]: loads[r["family"]] for r in rows if r["family"] in loads}
            meta = {
                "command": command,
                "commit": commit_start
                if commit_now == commit_start
                else f"{commit_start} (HEAD {commit_now} by the end)",
                "started": start.strftime("%Y-%m-%d %H:%M UTC"),
                "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "wall_min": earlier_min + (time.perf_counter() - t0) / 60,
                "resumed": resumed,
                "commit_start": commit_start,
                "tree": _tree_state(),
                "jobs": args.jobs,
                "machine": f"{platform.node()} ({platform.machine()})",
                "loadavg": {
                    "min": min(at_start.values()),
                    "max": max(at_start.values()),
                    "median": float(np.median(list(at_start.values()))),
                    "at_family_start": at_start,
                },
                "families": list(families),
                "logs": workdir,
            }
            table, summ = write(rows, stem, meta)
    if all(f in done for f in families):
        if old_meta is None or not rows:
            print("nothing left to run")
            return rows
        # every family is in the stored results: the tables, the summary and the plot are written again from them
        # (after a change to the report's code), with the stored run's description
        print("nothing left to run: the report is written again from the stored rows", flush=True)
        table, summ = write(rows, stem, old_meta)
    print(table)
    print(json.dumps(summ, indent=1))
    try:
        plot(rows, f"{stem}.png")
    except Exception as err:  # noqa: BLE001 - the plot is optional
        print(f"plot failed: {_error(err)}")
    return rows


if __name__ == "__main__":
    main()
