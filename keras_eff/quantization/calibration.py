"""calibrate: every activation range of a quantized model set from data, without training."""

from __future__ import annotations

from tqdm.auto import tqdm

from ..data import check_count, model_samples
from .quantizers import ActivationQuantizer


def activation_quantizers(model) -> list:
    """Every ActivationQuantizer inside ``model`` (wrapped layers and nested models included)."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, ActivationQuantizer)]


def _check_data(model, data, max_samples=None, what="calibration data"):
    return model_samples(model, data, what, max_samples)


def calibrate(model, data, batch_size: int = 64, max_samples: int | None = 1024, progress: bool = True):
    """Sets every activation range of a quantized model to the min/max seen on ``data`` (float forward passes).

    Use it before QAT (a good start) or as post-training quantization on its own. Changes ``model`` in place and
    returns it. Fixed ranges (softmax, sigmoid, tanh) are left as TFLite defines them.

    ``data``: a numpy array of inputs, an ``(x, y)`` tuple, a ``tf.data.Dataset`` of ``x`` or ``(x, y)`` elements
    (batched or not), a ``keras.utils.PyDataset`` or a generator of batches; at most ``max_samples`` inputs are read
    (None: all of them), run in batches of ``batch_size``. Both counts must be at least 1.
    """
    batch_size = check_count(batch_size, "batch_size", what="inputs per forward pass")
    max_samples = check_count(max_samples, "max_samples", allow_none=True, what="the most inputs to calibrate on")
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
