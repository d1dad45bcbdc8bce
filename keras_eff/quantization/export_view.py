"""The export protocol of ``tflite_export`` (``tflite_export.export_view``), shared by the quantized layers."""

from __future__ import annotations

import contextlib


class ExportView:
    """Mixin for a layer whose inference differs from what its int8 file should be traced from: the integer
    emulation of the wrappers and composite layers, the runtime rounding of a model's input range."""

    _export_view = False

    @contextlib.contextmanager
    def export_view(self):
        """A context in which the layer computes the plain fake-quant graph, the converter's input: no integer
        emulation, no runtime rounding.

        ``tflite_export`` traces a model for export inside it (its export protocol).

        Yields:
            None.
        """
        previous, self._export_view = self._export_view, True
        try:
            yield
        finally:
            self._export_view = previous
