"""Which LiteRT kernels compute what TFLite Micro computes? Micro against LiteRT's XNNPACK delegate, its optimized
built-in kernels and its reference kernels, on a plain CNN and on residual ones.

    python -m benchmarks.micro_kernels            # ~4 min on a shared 2-core machine (three seeds)
    python -m benchmarks.micro_kernels --quick    # a smoke run

Each model (keras_eff.models small_cnn and residual_cnn, and a ResNet-8 in the MLPerf Tiny layout adapted to
28×28×1) is trained briefly on a Fashion-MNIST slice, once per seed, quantized with keras_eff (``quantize_model`` +
``calibrate`` on 500 training images, post-training, no QAT) and exported to full int8 (``tflite_export.to_tflite``).
The same int8 test images then run through TFLite Micro (its Python interpreter, ``tflite_export.run_micro``) and
through LiteRT with each kernel choice (``TFLiteModel(..., kernels=...)``); per choice: the share of images whose 10
raw output values are all identical to Micro's (bit-exact), the share of identical values and the largest difference
in output steps (LSB). Results: benchmarks/results/micro_kernels{,_quick}.{md,json}.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results")
KERNELS = ("xnnpack", "builtin", "reference")


def resnet8(input_shape=(28, 28, 1), num_classes=10, width=16, bn_momentum=0.9, name="resnet8"):
    """ResNet-8 as in MLPerf Tiny's image classification: a 3×3 stem, three residual stacks of two 3×3 convs (the
    second and third with stride 2 and a 1×1 projection shortcut) at width, 2×width and 4×width, average
    pooling."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (filters, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"s{i}_conv1")(x)
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"s{i}_bn1")(y)
        y = layers.ReLU(name=f"s{i}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{i}_conv2")(y)
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"s{i}_bn2")(y)
        if stride != 1:
            x = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"s{i}_proj")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"s{i}_proj_bn")(x)
        x = layers.ReLU(name=f"s{i}_relu2")(layers.Add(name=f"s{i}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name=name)


def agreement(micro: np.ndarray, lite: np.ndarray) -> dict:
    """Micro vs one LiteRT kernel choice, on raw int8 outputs of shape (n, classes)."""
    diff = np.abs(micro.astype(np.int32) - lite.astype(np.int32))
    return {
        "bit_exact": float(np.mean(np.all(diff == 0, axis=1))),
        "exact_values": float(np.mean(diff == 0)),
        "max_lsb": int(diff.max()),
    }


def measure(name, build, data, args, seed) -> dict:
    import keras

    import keras_eff as ke
    import tflite_export as te
    from keras_eff.models import compile_classifier

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = compile_classifier(build(width=args.width))
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
    q = ke.quantize_model(model)
    ke.calibrate(q, x_train[:500], progress=False)
    int8 = te.to_tflite(q)
    ops = te.read_graph(int8).op_names()
    micro = te.run_micro(int8, x_test)[0]
    row = {
        "model": name,
        "seed": seed,
        "ADD ops": ops.count("ADD"),
        "TFLM acc %": 100 * float(np.mean(micro.argmax(1) == y_test)),
    }
    for kernels in KERNELS:
        lite = te.TFLiteModel(int8, kernels=kernels).predict(x_test, dequantize_outputs=False)
        a = agreement(micro, lite)
        row[f"{kernels} bit-exact %"] = 100 * a["bit_exact"]
        row[f"{kernels} values %"] = 100 * a["exact_values"]
        row[f"{kernels} max LSB"] = a["max_lsb"]
    return row


def main(argv=None):
    from keras_eff.datasets import fashion_mnist_float
    from keras_eff.models import ZOO
    from keras_eff.reporting import write_results

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: fewer images")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    n_train, n_test = (2000, 100) if args.quick else (10000, 500)
    data = fashion_mnist_float(n_train=n_train, n_test=n_test)
    models = {"small_cnn": ZOO["small_cnn"], "residual_cnn": ZOO["residual_cnn"], "resnet8": resnet8}
    rows = []
    for name, build in models.items():
        for seed in args.seeds:
            rows.append(measure(name, build, data, args, seed))
            print(rows[-1], flush=True)
    from importlib.metadata import version

    micro_v, litert_v = version("tflite-micro"), version("ai-edge-litert")
    stem = os.path.join(RESULTS, "micro_kernels_quick" if args.quick else "micro_kernels")
    table = write_results(
        stem,
        "TFLite Micro vs LiteRT's three kernel choices",
        rows,
        notes=(
            f"Models at width {args.width}, {args.epochs} epoch(s) on {n_train:,} Fashion-MNIST training images "
            f"(seeds {', '.join(map(str, args.seeds))}, one trained model each); int8 by keras_eff.quantize_model "
            f"+ calibrate on 500 training images (no QAT), exported with tflite_export.to_tflite. {n_test} test "
            f"images through TFLite Micro (tflite-micro {micro_v}) and LiteRT (ai-edge-litert {litert_v}, one "
            f"thread): xnnpack = the XNNPACK delegate (LiteRT's default), builtin = the optimized built-in kernels "
            f"without delegates, reference = the reference kernels (OpResolverType.BUILTIN_REF). bit-exact = "
            f"images whose 10 raw outputs all equal Micro's; values = identical output values; max LSB = largest "
            f"difference in output steps."
        ),
        extra={
            "config": {
                "width": args.width,
                "epochs": args.epochs,
                "seeds": args.seeds,
                "n_train": n_train,
                "n_test": n_test,
                "tflite_micro": micro_v,
                "ai_edge_litert": litert_v,
            }
        },
    )
    print(table)


if __name__ == "__main__":
    main()
