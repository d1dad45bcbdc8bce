"""What the composite quantized layers share (``layer_norm.QuantizedNormalization``, ``attention.QuantizedAttention``):
one layer standing for several int8 ops, with an activation range on each intermediate tensor."""

from __future__ import annotations

import keras

from . import integer_inference as integer
from .export_view import ExportView
from .quantizers import ActivationQuantizer
from .wrapper import _in_saving_scope, _load, _shared_config


class CompositeQuantized(ExportView, keras.layers.Layer):
    """Holds ``step_quantizers`` (one per intermediate tensor, the last on the output), the export protocol, the
    unset-ranges protocol and the serialization of its quantizers as objects other layers may also hold."""

    def _init_activation_steps(self, names, bits, symmetric, ema_decay, quantizers, integer_kernels, fixed=None):
        """``_init_steps`` with one learned ``ActivationQuantizer`` per step named ``<layer>_<step>_range`` (or a
        fixed range, ``fixed``: step -> (min, max)); keeps ``bits``, ``symmetric`` and ``ema_decay`` for the config."""
        self.bits, self.symmetric, self.ema_decay = int(bits), bool(symmetric), float(ema_decay)
        act = dict(bits=self.bits, symmetric=self.symmetric, ema_decay=self.ema_decay)
        fixed = fixed or {}
        self._init_steps(
            names,
            quantizers,
            lambda step: ActivationQuantizer(**act, fixed_range=fixed.get(step), name=f"{self.name}_{step}_range"),
            integer_kernels,
        )

    def _init_steps(self, names, quantizers, make, integer_kernels="xnnpack"):
        """``make(step)`` builds a step's quantizer; from a config, the deserialized ones are used instead (the
        same objects the layers reading them hold: see ``wrapper._shared_config``). ``integer_kernels``: whose
        integer arithmetic inference reproduces where the layer emulates it (``set_integer_kernels``)."""
        self.integer_kernels = integer.check_kernels(integer_kernels)
        if quantizers is None:
            self.step_quantizers = [make(step) for step in names]
        else:
            self.step_quantizers = [
                q if isinstance(q, ActivationQuantizer) else keras.saving.deserialize_keras_object(q)
                for q in quantizers
            ]

    def _emulates(self, training, *quantizers) -> bool:
        """Whether this call computes as the chosen integer kernels do: inference with ``integer_kernels`` set, not
        traced for export, every grid in ``quantizers`` known, set and 8-bit."""
        if training or self._export_view or self.integer_kernels is None:
            return False
        return integer.grids_known(*quantizers)

    @property
    def final_quantizer(self):
        """The range of this layer's output (``placement`` reads it)."""
        return self.step_quantizers[-1]

    def _build_steps(self):
        for q in self.step_quantizers:
            if not q.built:
                q.build()

    def build(self, input_shape):
        """Builds the step quantizers (a layer that also holds weights builds them in its own ``build``)."""
        self._build_steps()
        self.built = True

    def unset_ranges(self) -> list:
        return [name for q in self.step_quantizers for name in q.unset_ranges()]

    def get_config(self):
        return {
            **super().get_config(),
            "quantizers": [_shared_config(q) for q in self.step_quantizers],
            "integer_kernels": self.integer_kernels,
            "bits": self.bits,
            "symmetric": self.symmetric,
            "ema_decay": self.ema_decay,
        }


class PlacedInput:
    """For a composite layer that reads one input's grid (``QuantizedNormalization``, ``QuantizedConstantOp``): the
    range ``placement.place_ranges`` hands in once, kept as a reference and saved as one."""

    def _place_saved(self, input_range):
        """``place`` with the range of a saved config (the same object its producer holds), or with none."""
        self.place(_load(input_range) if input_range is not None and _in_saving_scope() else None)

    def place(self, input_range=None):
        """Takes the range of the input's grid (``placement.place_ranges`` calls it): a reference, not a sub-layer
        (the layer that owns the range trains and saves it)."""
        object.__setattr__(self, "_input_range", input_range)

    def get_config(self):
        return {
            **super().get_config(),
            "input_range": None if self._input_range is None else _shared_config(self._input_range),
        }
