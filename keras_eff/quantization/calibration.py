"""calibrate: every activation range of a quantized model set from data, without training."""

from __future__ import annotations

from tqdm.auto import tqdm

from tflite_export import check_samples

from .quantizers import ActivationQuantizer


def activation_quantizers(model) -> list:
    """Finds every activation range of a quantized model.

    Args:
        model: A Keras model or layer. Not changed.

    Returns:
        A list of the `ActivationQuantizer` layers inside ``model`` (those owned by wrappers and nested models
        included), in layer order; empty for a float model.
    """
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, ActivationQuantizer)]


def _check_data(model, data, max_samples=None):
    inputs = getattr(model, "inputs", None)  # a subclassed model declares no input shape
    return check_samples(data, inputs[0].shape[1:] if inputs else None, "calibration data", f"model {model.name!r}",
                         max_samples)


def calibrate(model, data, batch_size: int = 64, max_samples: int = 1024, progress: bool = True):
    """Sets every activation range of a quantized model to the min/max seen on ``data``, in place.

    Runs forward passes in inference mode with quantization switched off and sets each range to the smallest and
    largest value it saw (widened to hold zero). Use it before QAT (a good start) or as post-training quantization on
    its own. Fixed ranges (softmax, sigmoid, tanh) are left as TFLite defines them.

    Args:
        model: A model made by ``quantize_model`` (or holding ``keras_eff.quantize`` layers). Changed in place.
        data: Typical inputs as one numeric array of shape ``(n, *input_shape)`` (a few hundred are enough); only the
            first ``max_samples`` are used.
        batch_size: Inputs per forward pass.
        max_samples: The most inputs used (the first ones).
        progress: Show a progress bar (only when there are at least 4 batches).

    Returns:
        ``model`` itself, its ranges set.

    Raises:
        ValueError: If ``model`` has no activation quantizers (quantize it first), or ``data`` does not match the
            model's input shape, is empty or holds NaN or infinite values.
        TypeError: If ``data`` is not a numeric array.

    Example:
        ```python
        qat = keras_eff.quantize_model(model)
        keras_eff.calibrate(qat, x_train[:512])
        ```
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
