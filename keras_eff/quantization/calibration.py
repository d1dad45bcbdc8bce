"""calibrate: every activation range of a quantized model set from data, without training."""

from __future__ import annotations

from tqdm.auto import tqdm

from tflite_export import check_samples

from .quantizers import ActivationQuantizer


def activation_quantizers(model) -> list:
    """Every ActivationQuantizer inside ``model`` (wrapped layers and nested models included)."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, ActivationQuantizer)]


def _check_data(model, data, max_samples=None):
    inputs = getattr(model, "inputs", None)  # a subclassed model declares no input shape
    return check_samples(data, inputs[0].shape[1:] if inputs else None, "calibration data", f"model {model.name!r}",
                         max_samples)


def calibrate(model, data, batch_size: int = 64, max_samples: int = 1024, progress: bool = True):
    """Sets every activation range of a quantized model to the min/max seen on ``data`` (float forward passes).

    Use it before QAT (a good start) or as post-training quantization on its own. Changes ``model`` in place and
    returns it. Fixed ranges (softmax, sigmoid, tanh) are left as TFLite defines them.
    """
    quantizers = activation_quantizers(model)
    if not quantizers:
        raise ValueError(f"model {model.name!r} has no activation quantizers: quantize it first with "
                         f"keras_eff.quantize_model")
    x = _check_data(model, data, max_samples)
    for q in quantizers:
        q.calibrating, q._calibration = True, None
    try:
        batches = range(0, len(x), batch_size)
        for i in tqdm(batches, desc="calibrating", disable=not progress or len(batches) < 4, leave=False):
            model(x[i:i + batch_size], training=False)
    finally:
        for q in quantizers:
            q.finish_calibration()
    return model
