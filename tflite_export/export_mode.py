"""The export protocol: what a layer computes while its model is traced for a file.

A quantization simulation can follow a runtime's integer arithmetic bit for bit at inference (exact accumulators,
the runtime's rounding), but the converter must see the plain fake-quant graph. A layer that computes differently
for export declares a method ``export_view()`` returning a context manager, inside which it computes what the file
should hold. ``export_view(model)`` enters it for every layer of the model (nested ones included): ``to_tflite``,
``to_onnx`` and the op checks trace inside it; wrap your own ``model.export`` in ``with export_view(model):`` when
you convert a model yourself. The switch belongs to each layer of that one model, for the duration of the trace:
nothing process-wide, and other models are unaffected.
"""

from __future__ import annotations

import contextlib

HOOK = "export_view"


def _layers(model):
    flatten = getattr(model, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=True)) if callable(flatten) else []


@contextlib.contextmanager
def export_view(model):
    """A context in which every layer of ``model`` that declares ``export_view()`` computes its export form.

    ``to_tflite``, ``to_onnx`` and the op checks trace inside it; use it around your own ``model.export`` when you
    convert a model yourself. Layers nested in other layers are included. The switch belongs to the layers of this
    one model and lasts only for the block: other models are unaffected.

    Args:
        model: A Keras model. A model without layers, or an object that is not a Keras model, is a no-op.

    Returns:
        A context manager whose ``with`` block receives ``model``.

    Example:
        ```python
        with tflite_export.export_view(model):
            model.export("saved", format="tf_saved_model")
        ```
    """
    with contextlib.ExitStack() as stack:
        for layer in _layers(model):
            hook = getattr(layer, HOOK, None)
            if callable(hook):
                stack.enter_context(hook())
        yield model
