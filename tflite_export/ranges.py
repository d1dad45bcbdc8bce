"""Whether a quantized model's activation ranges were ever set: the ``unset_ranges`` protocol.

A model carrying its own int8 ranges (TensorFlow FakeQuant ops, as quantization-aware training builds them) is
converted with exactly those ranges: representative data does not replace them. A range that was never set by
calibration or training still holds its initial value, and the int8 file silently computes on that grid (docs/export.md,
"Python API", gives the accuracy this cost in the case that was reported). ``to_tflite`` therefore asks the model first.

The protocol, duck-typed so that this package needs no knowledge of the library that made the layers:

- A layer that owns activation ranges may define ``unset_ranges()``, returning the names of those of its ranges that
  were never set (an empty list when all are). The answer must rest on saved state (a variable), so that a model
  saved as ``.keras`` and loaded again answers the same.
- ``find_unset_ranges(model)`` walks the layers in model order (nested models included) and asks every layer that
  defines the method; the sublayers of a layer that answered are not asked again. Layers without it are not
  quantization layers and are not checked.
"""

from __future__ import annotations


def _walk(layer):
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        hook = getattr(sub, "unset_ranges", None)
        if callable(hook):
            yield sub, list(hook())
        else:
            yield from _walk(sub)


def find_unset_ranges(model) -> list[tuple[str, list[str]]]:
    """Lists the layers of a model whose activation ranges were never set, by asking their ``unset_ranges()``.

    The layers are walked in model order, nested ones included; the sublayers of a layer that answered are not asked
    again, and layers without the method are not checked (see the module docstring for the protocol).

    Args:
        model: A Keras model (or layer).

    Returns:
        ``[(layer name, [names of its ranges never set]), ...]`` in model order, for the layers with any; empty when
        every range was set or the model has no layer that answers.

    Example:
        ```python
        for layer, names in tflite_export.find_unset_ranges(model):
            print(f"{layer}: {', '.join(names)} never set; calibrate first")
        ```
    """
    return [(layer.name, names) for layer, names in _walk(model) if names]
