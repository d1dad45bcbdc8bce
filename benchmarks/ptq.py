"""Post-training quantization on a MobileNet-like Fashion-MNIST model: CLE, bias correction, AdaRound, mixed precision.

The model is keras_eff.models.ds_cnn (depthwise-separable blocks, BatchNorm, ReLU6) in which the BatchNorms feeding
each depthwise conv have per-channel gains γ spread log-uniformly over [0.003, 1] and kept fixed in training: after BN
folding the depthwise kernels' channel ranges differ by ~300×, as in MobileNets, where per-tensor weight grids fail.
Rows: W8A8 per-tensor plain PTQ vs CLE vs CLE + bias correction (empirical, and analytical without data); W4A8 and
W3A8 per-tensor nearest rounding vs AdaRound (both on the equalized model); mixed precision at an average of 5 bits.
"recovered" is the share of the baseline's accuracy loss (vs float) a technique wins back, given only where the
baseline lost at least 3 points.

    python -m benchmarks.ptq            # the full run (about 20–30 minutes on 2 busy cores)
    python -m benchmarks.ptq --quick    # a smoke run on a slice
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np

import keras_eff as ke
from keras_eff import ptq
from keras_eff.datasets import fashion_mnist_float
from keras_eff.models import compile_classifier, ds_cnn
from keras_eff.reporting import write_results

RESULTS = Path(__file__).parent / "results"


FEEDS_DEPTHWISE = ("stem_bn", "pw0_bn", "pw1_bn")


def unbalanced_ds_cnn(width, seed, spread=(0.003, 1.0)):
    """ds_cnn whose BatchNorms in front of each depthwise conv have fixed gains γ, log-uniform over ``spread``.

    The depthwise inputs then differ in scale by up to 300× per channel; the depthwise BatchNorm normalizes them, so
    after folding the depthwise kernels' channel ranges differ as much (large where the input is small): the
    MobileNet situation in which a per-tensor weight grid fails."""
    keras.utils.set_random_seed(seed)
    model = ds_cnn(width=width)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name in FEEDS_DEPTHWISE:
            n = layer.gamma.shape[0]
            layer.gamma.assign(np.exp(rng.uniform(np.log(spread[0]), np.log(spread[1]), n)).astype("float32"))
            layer.gamma.trainable = False
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


MIN_LOSS = 0.03  # a recovery counts only where the baseline lost at least 3 points


def recovered(value, baseline, reference):
    lost = reference - baseline
    return float((value - baseline) / lost) if lost >= MIN_LOSS else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on a data slice")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        n_train, n_test, epochs, width, iters, cal_n = 6000, 1000, 2, 16, 200, 256
    else:
        n_train, n_test, epochs, width, iters, cal_n = 30000, 5000, 4, 32, 500, 512
    (x, y), (xt, yt) = fashion_mnist_float(n_train=n_train, n_test=n_test)
    n_val = 1000 if args.quick else 2000
    (x, y), (xv, yv) = (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])  # validation: mixed-precision choices
    cal = x[:cal_n]
    acc = lambda m: accuracy(m, xt, yt)  # noqa: E731

    t0 = time.perf_counter()
    model = compile_classifier(unbalanced_ds_cnn(width, args.seed))
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=2)
    train_s = time.perf_counter() - t0
    float_acc = acc(model)
    print(f"float: {float_acc:.4f} ({train_s:.0f} s training)", flush=True)
    rows = [dict(experiment="reference", method="float (ReLU6)", weights="float", accuracy=100 * float_acc)]

    def row(experiment, method, weights, value, baseline, seconds, reference=float_acc):
        r = dict(
            experiment=experiment,
            method=method,
            weights=weights,
            accuracy=100 * value,
            **{"drop pts": 100 * (reference - value)},
            recovered=recovered(value, baseline, reference) if baseline is not None else None,
            seconds=seconds,
        )
        rows.append(r)
        print(r, flush=True)
        return value

    # -- W8A8 per-tensor: plain vs CLE vs CLE + bias correction -------------------------------------------------
    w8 = ke.QuantConfig(weight_bits=8, weight_granularity="per_tensor")
    t = time.perf_counter()

    def calibrated(m, config=None):
        q = ke.quantize_model(m, config)
        ke.calibrate(q, cal, progress=False)
        return q

    plain = acc(calibrated(model, w8))
    row("W8A8 per-tensor", "plain PTQ (BN folded)", "int8", plain, None, time.perf_counter() - t)
    t = time.perf_counter()
    eq = ptq.equalize(model)
    cle_s = time.perf_counter() - t
    eq_float = acc(eq)
    row("W8A8 per-tensor", "float after CLE (ReLU6→ReLU)", "float", eq_float, None, cle_s)
    q = calibrated(eq, w8)
    row("W8A8 per-tensor", "CLE", "int8", acc(q), plain, time.perf_counter() - t)
    t = time.perf_counter()
    corrected = ptq.bias_correction(q, statistics=eq)
    row(
        "W8A8 per-tensor",
        "CLE + analytical BC (no data)",
        "int8",
        acc(corrected),
        plain,
        time.perf_counter() - t + cle_s,
    )
    t = time.perf_counter()
    corrected = ptq.bias_correction(q, cal)
    row("W8A8 per-tensor", "CLE + empirical BC", "int8", acc(corrected), plain, time.perf_counter() - t + cle_s)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "ptq_quick" if args.quick else "ptq"
    ptq.plot_weight_ranges(eq, RESULTS / f"{stem}_weight_ranges.png")

    # -- W4A8 and W3A8 per-tensor: nearest vs AdaRound (on the equalized model) ---------------------------------
    for bits in (4, 3):
        cfg = ke.QuantConfig(weight_bits=bits, weight_granularity="per_tensor")
        experiment = f"W{bits}A8 per-tensor (on CLE)"
        t = time.perf_counter()
        q = calibrated(eq, cfg)
        nearest = acc(q)
        row(experiment, "nearest rounding", f"int{bits} in int8", nearest, None, time.perf_counter() - t)
        t = time.perf_counter()
        q = ptq.adaround(q, cal, iterations=iters, float_model=eq)
        ke.calibrate(q, cal, progress=False)
        row(experiment, f"AdaRound ({iters} it/layer)", f"int{bits} in int8", acc(q), nearest, time.perf_counter() - t)
        if bits == 4:
            div = ptq.divergence(q, xt, samples=8, path=RESULTS / f"{stem}_divergence.png")
            ada4 = ke.get_report(q, "adaround")

    # -- mixed precision at an average of 5 bits -----------------------------------------------------------------
    t = time.perf_counter()
    mp = ke.quantization.mixed_precision(
        model, cal, lambda m: accuracy(m, xv, yv), target_average_bits=5.0, candidate_bits=(8, 6, 4)
    )
    mp_s = time.perf_counter() - t
    all8 = acc(calibrated(model))
    mixed = acc(mp.model)
    ptq.plot_sensitivity(mp.sensitivity, RESULTS / f"{stem}_sensitivity.png", mp.parameters)
    rows.append(
        dict(
            experiment="mixed precision (per-channel)",
            method="all 8-bit",
            weights="int8",
            accuracy=100 * all8,
            **{"drop pts": 100 * (float_acc - all8)},
        )
    )
    rows.append(
        dict(
            experiment="mixed precision (per-channel)",
            method=f"avg {mp.average_bits:.2f} bits",
            weights="/".join(str(b) for b in mp.bits.values()),
            accuracy=100 * mixed,
            **{"drop pts": 100 * (float_acc - mixed)},
            seconds=mp_s,
            **{"TFLite KB": mp.tflite_bytes / 1024, "packed KB": mp.packed_bytes / 1024},
        )
    )
    print(mp, flush=True)

    columns = [
        "experiment",
        "method",
        "weights",
        "accuracy",
        "drop pts",
        "recovered",
        "seconds",
        "TFLite KB",
        "packed KB",
    ]
    notes = (
        f"ds_cnn width {width} ({model.count_params():,} parameters), gains of the BNs feeding depthwise convs "
        f"fixed log-uniform in [0.003, 1]; trained {epochs} epochs on {len(x):,} Fashion-MNIST images "
        f"({train_s:.0f} s), tested on {n_test:,}. Calibration and PTQ data: {cal_n} training images. "
        f"'recovered' = (accuracy − baseline) / (float − baseline), the baseline being the first int row of its "
        f"experiment (plain PTQ; nearest rounding) and float the original float model; left empty where the "
        f"baseline lost less than 3 points. 'seconds': wall time of "
        f"the step on a shared 2-core machine. BC = bias correction. Mixed precision: sensitivity of each layer "
        f"alone at 6 and 4 bits on {n_val:,} held-out training images, layers lowered largest first to an "
        f"average of 5 bits (parameter-weighted); weights listed largest layer first; 'packed KB' is the "
        f"TFLite size with sub-8-bit weights packed at their width. Simulation vs int8 TFLite after W4 AdaRound: "
        f"first layer beyond 2 LSB: {div['first_drift']}, max {max(r['max_lsb'] for r in div['layers']):.1f} "
        f"LSB. Plots: {stem}_weight_ranges.png, {stem}_sensitivity.png, {stem}_divergence.png."
    )
    table = write_results(
        RESULTS / stem,
        "Post-training quantization on a MobileNet-like Fashion-MNIST model",
        rows,
        columns,
        notes=notes,
        extra={
            "equalization": ke.get_report(eq, "equalization").as_dict(),
            "mixed_precision": mp.as_dict(),
            "divergence": div,
            "adaround_w4": {k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in ada4.layers.items()},
        },
    )
    print(table)
    return rows


if __name__ == "__main__":
    main()
