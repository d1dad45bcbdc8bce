"""int8 file size, keras-eff against the converter's own PTQ, on untrained and on trained-like weights.

``benchmarks/coverage.py`` compares file sizes on keras.applications built with ``weights=None``: untrained, every
BatchNorm at its initial statistics. There the converter's PTQ produces constants that are equal across layers (the
same BatchNorm multiplier and offset, whole kernels quantized to zero) and stores each such constant once (tensors
sharing one buffer), which makes its files smaller than they are for a trained model. This benchmark measures both:

- ``initial``: the family as ``weights=None`` builds it (what coverage measures);
- ``trained-like``: the same weights with every BatchNorm given the statistics of a trained one (γ uniform in
  [0.5, 1.5], β and the moving mean normal with σ 0.1, the moving variance uniform in [0.5, 2]; seed 0).

Each row: the keras-eff file (``quantize_model`` → ``calibrate`` on 64 images → ``to_tflite``) and the converter's
full-int8 PTQ of the float model on the same 64 images; bytes, bytes in constant buffers, bytes saved by buffers
that several tensors share, bytes of quantization parameters (a float32 scale and an int64 zero point per channel)
and of tensor names, tensors and ops.

    python -m benchmarks.file_size                              # the families coverage finds over 2 % (about 12 min)
    python -m benchmarks.file_size --families MobileNetV3Small  # one family, results in file_size_partial.*
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from benchmarks import write_run
from benchmarks.coverage import build, data

FAMILIES = ("MobileNetV3Small", "MobileNetV3Large", "DenseNet121", "NASNetMobile")


def trained_like_batchnorms(model, seed=0) -> int:
    """Gives every BatchNormalization of ``model`` (nested ones too) trained-like statistics; returns how many."""
    import keras

    rng = np.random.default_rng(seed)
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
            n += 1
    return n


def file_facts(blob: bytes) -> dict:
    """Bytes, constant-buffer bytes, bytes saved by buffers several tensors share, and ops of a TFLite file."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    fb = schema.Model.GetRootAs(blob, 0)
    sub = fb.Subgraphs(0)
    readers = collections.Counter(sub.Tensors(i).Buffer() for i in range(sub.TensorsLength()))
    tensors = [sub.Tensors(i) for i in range(sub.TensorsLength())]
    quant = [t.Quantization() for t in tensors]
    return {
        "bytes": len(blob),
        "buffer_bytes": sum(fb.Buffers(b).DataLength() for b in range(fb.BuffersLength())),
        "quantization_bytes": sum(12 * q.ScaleLength() + 8 * (q.MinLength() + q.MaxLength()) for q in quant if q),
        "name_bytes": sum(len(t.Name() or b"") for t in tensors),
        "tensors": len(tensors),
        "shared_saves": sum(fb.Buffers(b).DataLength() * (n - 1) for b, n in readers.items()),
        "ops": sub.OperatorsLength(),
    }


def measure(family: str, weights: str) -> dict:
    import keras_eff as ke
    import tflite_export as te

    model = build(family)
    if weights == "trained-like":
        trained_like_batchnorms(model)
    x, _, _ = data(family)
    t = time.perf_counter()
    converter = file_facts(te.to_tflite(model, representative_data=x))
    q = ke.quantize_model(model)
    ke.calibrate(q, x, progress=False)
    ours = file_facts(te.to_tflite(q))
    return {
        "family": family,
        "weights": weights,
        "keras-eff bytes": ours["bytes"],
        "converter bytes": converter["bytes"],
        "size vs converter %": round(100 * (ours["bytes"] / converter["bytes"] - 1), 2),
        "within 2 %": abs(ours["bytes"] / converter["bytes"] - 1) <= 0.02,
        "keras-eff buffers": ours["buffer_bytes"],
        "converter buffers": converter["buffer_bytes"],
        "converter shared-buffer savings": converter["shared_saves"],
        "keras-eff shared-buffer savings": ours["shared_saves"],
        "keras-eff quantization parameters": ours["quantization_bytes"],
        "converter quantization parameters": converter["quantization_bytes"],
        "keras-eff name bytes": ours["name_bytes"],
        "converter name bytes": converter["name_bytes"],
        "keras-eff tensors": ours["tensors"],
        "converter tensors": converter["tensors"],
        "keras-eff ops": ours["ops"],
        "converter ops": converter["ops"],
        "seconds": round(time.perf_counter() - t, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated (default: " + ", ".join(FAMILIES) + ")")
    args = parser.parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",")) if args.families else FAMILIES
    rows = []
    for family in families:
        for weights in ("initial", "trained-like"):
            rows.append(measure(family, weights))
            r = rows[-1]
            print(
                f"{family}, {weights}: keras-eff {r['keras-eff bytes']:,} B, converter {r['converter bytes']:,} B "
                f"({r['size vs converter %']:+.2f} %; the converter's shared buffers save "
                f"{r['converter shared-buffer savings']:,} B)",
                flush=True,
            )
    notes = (
        "keras.applications with default arguments (weights=None, classes=10, 64 px; coverage's builds and its 64 "
        "Fashion-MNIST calibration images). 'initial': as built; 'trained-like': every BatchNorm given trained-like "
        "statistics (γ ~ U[0.5, 1.5], β and moving mean ~ N(0, 0.1), moving variance ~ U[0.5, 2], seed 0), the "
        "other weights as built. 'shared-buffer savings': bytes a file saves by storing equal constants once (the "
        "sum over buffers of size × (readers − 1)). The issue's target: within 2 % of the converter's file."
    )
    title = "int8 file size: keras-eff vs the converter's PTQ, untrained and trained-like"
    write_run("file_size", title, rows, notes, "--families", families if args.families else None)


if __name__ == "__main__":
    main()
