"""Deployment figures of the reference models: int8 size, TFLite Micro arena, TFLite Micro vs LiteRT, ONNX vs Keras,
and LiteRT latency int8 vs float.

    python -m benchmarks.micro_export [--width 8] [--epochs 1] [--train 10000] [--test 500]

Each ZOO model is trained briefly on Fashion-MNIST, exported to int8 (post-training, 500 calibration images) and
float TFLite and to ONNX; the table goes to benchmarks/results/micro_export.{md,json}.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def measure(name, build, data, args):
    import keras

    import tflite_export as te
    from keras_eff.models import compile_classifier

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(0)
    model = compile_classifier(build(width=args.width))
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
    keras_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    int8 = te.to_tflite(model, representative_data=x_train[:500], max_samples=500)
    float_tfl = te.to_tflite(model, quantize=False)
    pkg = te.micro_package(int8, name="model", x=x_test, check_samples=len(x_test))
    micro_out = te.run_micro(int8, x_test, arena_size=pkg.arena.recommended_bytes)[0]
    xnn = te.check_micro(int8, x_test, arena_size=pkg.arena.recommended_bytes, kernels="xnnpack")
    ref = te.check_micro(int8, x_test, arena_size=pkg.arena.recommended_bytes, kernels="reference")
    onnx = te.compare_onnx(model, te.to_onnx(model), x_test)
    lat = te.compare_latency({"int8": int8, "float": float_tfl}, runs=200, rounds=args.rounds)
    spread = {k: v["max_us"] - v["min_us"] for k, v in lat.items()}
    return {
        "model": name,
        "params": int(model.count_params()),
        "MACs": te.count_macs(int8).total_macs,
        "int8 KB": len(int8) / 1024,
        "arena host B": pkg.arena.host_min_bytes,
        "arena rec. B": pkg.arena.recommended_bytes,
        "keras acc %": 100 * keras_acc,
        "TFLM acc %": 100 * float(np.mean(micro_out.argmax(1) == y_test)),
        "TFLM=LiteRT bit-exact %": 100 * pkg.check.bit_exact_samples,
        "max LSB": pkg.check.max_lsb_diff,
        "TFLM=XNNPACK bit-exact %": 100 * xnn.bit_exact_samples,
        "max LSB XNNPACK": xnn.max_lsb_diff,
        "TFLM=LiteRT ref. bit-exact %": 100 * ref.bit_exact_samples,
        "max LSB ref.": ref.max_lsb_diff,
        "ONNX max rel diff": onnx.max_rel_diff,
        "int8 µs": lat["int8"]["median_us"],
        "float µs": lat["float"]["median_us"],
        "spread µs (int8/float)": f"{spread['int8']:.1f}/{spread['float']:.1f}",
    }


def main(argv=None):
    from tqdm import tqdm

    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.models import ZOO
    from keras_eff.reporting import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds of 200 runs")
    p.add_argument("--out", default="benchmarks/results/micro_export")
    args = p.parse_args(argv)
    data = fashion_mnist_float(n_train=args.train, n_test=args.test)
    rows = [measure(name, build, data, args) for name, build in tqdm(ZOO.items(), desc="models")]
    table = write_results(
        args.out,
        "Deployment: TFLite Micro arena and parity, ONNX parity, LiteRT latency",
        rows,
        notes=(
            f"ZOO models at width {args.width}, {args.epochs} epoch(s) on {args.train:,} Fashion-MNIST images; "
            f"int8 by post-training quantization on 500 images; checks on {args.test} test images. Arena: host "
            f"minimum by binary search (one byte less fails) and the recommended size with a 25% margin. TFLM "
            f"compared with LiteRT's optimized built-in kernels (TFLM=LiteRT), its XNNPACK delegate and its "
            f"reference kernels (ref., OpResolverType.BUILTIN_REF). Latency: LiteRT, batch 1, "
            f"one thread, median of {args.rounds} interleaved rounds of 200 runs; spread = max-min round median."
        ),
    )
    print(table)


if __name__ == "__main__":
    main()
