"""Encodings export: every quantized tensor's bit width, scale, offset, min and max, as JSON (AIMET-like layout).

offset is the zero point on the signed integer grid, as TFLite stores it: real = scale · (q − offset). Weights are
symmetric (offset 0), one encoding per output channel where per-channel; activations have one encoding each.
"""

from __future__ import annotations

import numpy as np

from tflite_export import atomic_write_json

from ..quantization import QuantizeWrapper, activation_quantizers, layer_ops


def _activation_encoding(q) -> dict:
    lo, hi = (float(v) for v in q.bounds("float64"))
    levels = 2**q.bits - 1
    scale = (hi - lo) / levels
    qmin = -(2 ** (q.bits - 1))
    offset = int(np.clip(qmin + np.floor(-lo / scale + 0.5), qmin, qmin + levels))  # as the converter nudges
    return {
        "bitwidth": q.bits,
        "dtype": "int",
        "is_symmetric": q.symmetric,
        "scale": scale,
        "offset": offset,
        "min": (qmin - offset) * scale,
        "max": (qmin + levels - offset) * scale,
    }


def _weight_encodings(wrapper) -> dict:
    out = {}
    kernels, _ = wrapper.folded_kernels()
    wq = wrapper.weight_quantizer
    for name, kernel in kernels.items():
        k = layer_ops.to_channels_last(wrapper.layer, name, kernel)
        scales = np.atleast_1d(np.asarray(wq.scale(k), np.float64))
        n = 2 ** (wq.bits - 1) - 1
        out[f"{wrapper.layer.name}/{name}"] = [
            {
                "bitwidth": wq.bits,
                "dtype": "int",
                "is_symmetric": wq.symmetric,
                "scale": float(s),
                "offset": 0,
                "min": float(-n * s),
                "max": float(n * s),
            }
            for s in scales
        ]
    return out


def export_encodings(quantized_model, path=None) -> dict:
    """Lists the encoding of every quantized tensor: bit width, scale, offset (zero point), min and max.

    Weights get one encoding per output channel where per-channel (offset 0: symmetric), activations one each; the
    layout is AIMET-like (``activation_encodings``, ``param_encodings``), offsets on the signed grid as TFLite stores
    them.

    Args:
        quantized_model: A model made by ``keras_eff.quantize_model``, calibrated or trained. Not changed.
        path: A JSON file to write (atomically); None: no file.

    Returns:
        ``{"version": "keras_eff/1", "activation_encodings": {range name: [encoding]}, "param_encodings":
        {"layer/kernel": [encoding per channel]}}``.

    Raises:
        ValueError: If ``quantized_model`` holds no `QuantizeWrapper`.

    Example:
        ```python
        keras_eff.ptq.export_encodings(q, "encodings.json")
        ```
    """
    wrappers = [
        layer
        for layer in quantized_model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, QuantizeWrapper)
    ]
    if not wrappers:
        raise ValueError(f"model {quantized_model.name!r} is not quantized: run keras_eff.quantize_model first")
    activation_encodings: dict[str, list] = {}
    param_encodings: dict[str, list] = {}
    for q in activation_quantizers(quantized_model):
        activation_encodings[q.name] = [_activation_encoding(q)]
    for w in wrappers:
        if w.has_kernel:
            param_encodings.update(_weight_encodings(w))
    enc = {"version": "keras_eff/1", "activation_encodings": activation_encodings, "param_encodings": param_encodings}
    if path is not None:
        atomic_write_json(path, enc)
    return enc
