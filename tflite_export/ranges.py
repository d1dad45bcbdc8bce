"""Whether a quantized model's activation ranges were ever set: the ``unset_ranges`` protocol.

A model carrying its own int8 ranges (TensorFlow FakeQuant ops, as quantization-aware training builds them) is
converted with exactly those ranges: representative data does not replace them. A range that was never set by
calibration or training still holds its initial value, and the int8 file silently computes on that grid (reported in
keras-eff's issue #17: a QAT model of raw pixels, never calibrated nor trained, scored 0.44 in int8 against 0.65 in
float). ``to_tflite`` therefore asks the model first.

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
    """[(layer name, [names of its ranges never set]), ...] in model order, for the layers with any (see the module
    docstring); empty when every range was set or the model has none."""
    return [(layer.name, names) for layer, names in _walk(model) if names]
