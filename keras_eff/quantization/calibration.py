"""calibrate: every activation range of a quantized model set from data, without training."""

from __future__ import annotations

from tqdm.auto import tqdm

from ..data import check_count, model_input_samples
from .quantizers import ActivationQuantizer


def activation_quantizers(model) -> list:
    """Finds every activation range of a quantized model.

    Args:
        model: A Keras model or layer. Not changed.

    Returns:
        A list of the `ActivationQuantizer` layers inside ``model`` (those owned by wrappers and nested models
        included), in layer order; empty for a float model.
    """
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, ActivationQuantizer)
    ]


def calibrate(model, data, batch_size: int = 64, max_samples: int | None = 1024, progress: bool = True) -> None:
    """Sets every activation range of a quantized model to the min/max seen on ``data``, in place.

    Runs forward passes in inference mode with quantization switched off and sets each range to the smallest and
    largest value it saw (widened to hold zero). Use it before QAT (a good start) or as post-training quantization on
    its own. Fixed ranges (softmax, sigmoid, tanh) are left as TFLite defines them.

    Args:
        model: A model made by ``quantize_model`` (or holding ``keras_eff.quantize`` layers). Changed in place.
        data: Typical inputs (a few hundred are enough): a numeric array of shape ``(n, *input_shape)``, an
            ``(x, y)`` tuple, a ``tf.data.Dataset`` of ``x`` or ``(x, y)`` elements (batched or not), a
            ``keras.utils.PyDataset`` or a generator of batches. For a model with several inputs: a list of arrays,
            one per input in the order of ``model.inputs`` (or ``(that list, y)``).
        batch_size: Inputs per forward pass, at least 1.
        max_samples: The most inputs read (the first ones), at least 1; None reads them all (an endless source then
            raises).
        progress: Show a progress bar (only when there are at least 4 batches).

    Returns:
        None. ``model``'s activation ranges are set in place.

    Raises:
        ValueError: If ``model`` has no activation quantizers (quantize it first), or ``data`` does not match the
            model's input shape, is empty or holds NaN or infinite values, or ``batch_size``/``max_samples`` is below
            1.
        TypeError: If ``data`` is none of the accepted kinds, or a count is not a whole number.

    Example:
        ```python
        qat = keras_eff.quantize_model(model)
        keras_eff.calibrate(qat, x_train[:512])
        ```
    """
    batch_size = check_count(batch_size, "batch_size", what="inputs per forward pass")
    max_samples = check_count(max_samples, "max_samples", allow_none=True, what="the most inputs to calibrate on")
    quantizers = activation_quantizers(model)
    if not quantizers:
        raise ValueError(
            f"model {model.name!r} has no activation quantizers: quantize it first with keras_eff.quantize_model"
        )
    xs = model_input_samples(model, data, "calibration data", max_samples)
    for q in quantizers:
        q.calibrating, q._calibration = True, None
    try:
        batches = range(0, len(xs[0]), batch_size)
        for i in tqdm(batches, desc="calibrating", disable=not progress or len(batches) < 4, leave=False):
            batch = [x[i : i + batch_size] for x in xs]
            model(batch if len(batch) > 1 else batch[0], training=False)
    finally:
        for q in quantizers:
            q.finish_calibration()
