"""Whether a model is being traced for export: layers may compute differently for inference than what they export.

A quantization simulation can follow a runtime's integer arithmetic bit for bit at inference (exact accumulators,
the runtime's rounding), but the converter must see only the plain fake-quant graph. Layers ask ``is_exporting()``
while they are traced; ``to_tflite`` and ``to_onnx`` trace inside ``exporting()``. Wrap your own ``model.export``
in ``with tflite_export.exporting():`` when you convert a model yourself.
"""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_exporting() -> bool:
    """True while a model is traced for export (inside ``exporting()``)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def exporting():
    """Marks the enclosed tracing as an export (nests; thread-local)."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
