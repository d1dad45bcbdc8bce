"""keras.applications models as users build them, through keras-eff's QAT path to full int8 TFLite (issue #17).

For ONE family per process (NASNetMobile alone peaks near 10 GB): the model with its default arguments
(weights=None, classes=10, include_top and preprocessing as keras.applications sets them), ``quantize_model`` →
``calibrate`` (64 Fashion-MNIST images resized and tiled to 3 channels) → one fit step → ``to_tflite`` → ``compare``
against LiteRT with XNNPACK on 64 test images. Prints one line of results (and ``--json`` appends it to a file).

With weights=None the BatchNorm moving statistics are their initial values (mean 0, variance 1), so calibration
(inference mode) sets ranges for activations that are not normalized, while a training step with live BN statistics
normalizes them. Measured on EfficientNetV2B0: after one such step the stem kernel's gradient was 2e18 (1e1 with BN
frozen; the float model's step was sane), growing about tenfold per block towards the input (the likely mechanism,
not verified: activations quantized onto too coarse a grid, σ_B near √ε, a gain of about γ/√ε per BN); on
EfficientNetB0/V2B0, ResNet50V2 and DenseNet121 the file's scales became absurd (LiteRT: "failed to create XNNPACK
runtime", or a double free in XNNPACK). A trained model does not have that mismatch; ``--freeze-bn``
fits with FreezeBatchNorm(step=0), as the README's QAT recipe does.

    python -m benchmarks.applications_check MobileNetV3Small --size 64
    python -m benchmarks.applications_check MobileNetV3Small --kw include_preprocessing=False --kw minimalistic=True
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import numpy as np

FAMILIES = (
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "ResNet50",
    "ResNet50V2",
    "DenseNet121",
    "InceptionV3",
    "Xception",
    "NASNetMobile",
    "ConvNeXtTiny",
    "VGG16",
)
# families whose preprocessing is inside the model (a Rescaling or Normalization input layer) take 0..255 pixels
RAW_PIXELS = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny")
MIN_SIZE = {"InceptionV3": 75, "Xception": 71, "NASNetMobile": 32}


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def images(n, size, raw_pixels, offset=0, train=True):
    """Fashion-MNIST images resized to size×size and tiled to 3 channels; 0..255 or 0..1."""
    import tensorflow as tf

    from keras_eff.datasets import fashion_mnist_float

    (x_tr, y_tr), (x_te, y_te) = fashion_mnist_float(n_train=offset + n, n_test=offset + n)
    x, y = (x_tr, y_tr) if train else (x_te, y_te)
    x = tf.image.resize(x[offset : offset + n], (size, size)).numpy()
    x = np.repeat(x, 3, axis=-1).astype(np.float32)
    return (x * 255.0 if raw_pixels else x), y[offset : offset + n]


def build(family, size, kwargs):
    import keras

    fn = getattr(keras.applications, family)
    return fn(weights=None, classes=10, input_shape=(size, size, 3), **kwargs)


def run(family, size, kwargs, n_calib=64, n_test=64, fit_step=True, save=None, freeze_bn=False):
    import keras

    import keras_eff as ke
    import tflite_export as te

    row = dict(family=family, size=size, kwargs=kwargs)
    t0 = time.time()
    keras.utils.set_random_seed(0)
    model = build(family, size, kwargs)
    row["params"] = int(model.count_params())
    raw = family in RAW_PIXELS and kwargs.get("include_preprocessing", True)
    x_cal, y_cal = images(n_calib, size, raw)
    x_test, _ = images(n_test, size, raw, train=False)
    try:
        qat = ke.quantize_model(model)
        report = ke.quantization.quantization_report(qat)
        row["quantized"] = len(report.quantized)
        row["float_layers"] = [f"{n} ({r})" for n, r in report.float_layers]
        ke.calibrate(qat, x_cal, progress=False)
        if fit_step:
            qat.compile(optimizer=keras.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy")
            callbacks = [ke.callbacks.FreezeBatchNorm(step=0)] if freeze_bn else []
            qat.fit(x_cal[:8], y_cal[:8], batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
            row["fit"] = "frozen BN" if freeze_bn else "live BN"
        data = te.to_tflite(qat)
        row["export"] = "ok"
        row["bytes"] = len(data)
        if save:  # written before LiteRT runs it, to look at a file that crashes the interpreter
            te.atomic_write(save, data)
            te.files.atomic_write_npy(save + ".x.npy", x_test)
        cmp = te.compare(qat, data, x_test, batch_size=16)
        row.update(argmax=cmp.argmax_agreement, within_1_lsb=cmp.within_1_lsb, max_lsb=cmp.max_lsb_diff)
        ref = np.asarray(qat.predict(x_test, batch_size=16, verbose=0))
        tfl = te.TFLiteModel(data)
        out = tfl.outputs[0]
        scale, zp = out["quantization"]
        q_ref = te.runtime.quantize(ref.reshape(len(ref), -1), scale, zp).astype(np.int32)
        q_tfl = np.asarray(tfl.predict(x_test, batch_size=16, dequantize_outputs=False)).reshape(len(ref), -1)
        row["bit_exact"] = float(np.mean(q_ref == q_tfl.astype(np.int32)))
    except Exception as err:  # noqa: BLE001 - the row records what went wrong
        row["export"] = f"{type(err).__name__}: {str(err)[:400]}"
        row["traceback"] = traceback.format_exc()[-2000:]
    row["seconds"] = round(time.time() - t0, 1)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", choices=FAMILIES)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kw", action="append", default=[], help="extra constructor argument NAME=VALUE")
    p.add_argument("--no-fit", action="store_true", help="skip the one fit step")
    p.add_argument("--json", help="append the result row to this JSON-lines file")
    p.add_argument(
        "--freeze-bn",
        action="store_true",
        help="fit with BatchNorm statistics frozen from the first step (FreezeBatchNorm(step=0))",
    )
    p.add_argument("--save", help="write the .tflite file (and the test images as .x.npy) here")
    p.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failure")
    args = p.parse_args(argv)
    kwargs = {k: _value(v) for k, v in (kw.split("=", 1) for kw in args.kw)}
    size = max(args.size, MIN_SIZE.get(args.family, 32))
    row = run(args.family, size, kwargs, fit_step=not args.no_fit, save=args.save, freeze_bn=args.freeze_bn)
    tb = row.pop("traceback", None)
    if args.verbose and tb:
        print(tb)
    fl = row.get("float_layers", [])
    print(
        f"{args.family} {kwargs or ''} {size}px: export {row['export']}; quantized {row.get('quantized')}, "
        f"kept float {len(fl)}{' ' + str(fl[:5]) if fl else ''}; bit-exact {row.get('bit_exact', float('nan')):.4%}, "
        f"within 1 LSB {row.get('within_1_lsb', float('nan')):.4%}, max LSB {row.get('max_lsb')}, "
        f"argmax {row.get('argmax', float('nan')):.2%}, {row.get('bytes')} bytes, {row['seconds']} s"
    )
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
