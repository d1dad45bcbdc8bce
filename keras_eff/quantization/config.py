"""QuantConfig: bits, granularity and symmetry for weights and activations, defaults per layer type, overrides.

What int8 TFLite can hold, and so what ``tflite_export.to_tflite`` accepts:
- weights symmetric, 2–8 bits (stored as int8 values in the narrower range); per-channel for Conv and DepthwiseConv,
  per-tensor for Dense and Conv2DTranspose (the converter cannot hold per-channel there);
- activations 8-bit (asymmetric by default).
The simulation goes further for research (asymmetric weights, up to 16 bits, per-channel Dense); a model using that
is refused at export with the layer and the setting named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import keras

from ..layers import facts_for
from .preserve import check_preserve
from .quantizers import check_bits

GRANULARITIES = ("auto", "per_channel", "per_tensor")


@dataclass(frozen=True)
class LayerQuantSpec:
    """The settings that apply to one layer."""

    weight_bits: int = 8
    weight_symmetric: bool = True
    weight_granularity: str = "auto"
    activation_bits: int = 8
    activation_symmetric: bool = False
    fold_batchnorm: bool = True
    preserve: tuple = ()
    quantize: bool = True

    def __post_init__(self):
        object.__setattr__(self, "preserve", check_preserve(self.preserve))
        check_bits(self.weight_bits, "weight_bits")
        check_bits(self.activation_bits, "activation_bits")
        if self.weight_granularity not in GRANULARITIES:
            raise ValueError(f"weight_granularity={self.weight_granularity!r} must be one of {GRANULARITIES}")

    def per_channel_for(self, layer) -> bool:
        if self.weight_granularity == "auto":
            return facts_for(layer).per_channel  # where int8 TFLite holds per-channel scales (the registry)
        return self.weight_granularity == "per_channel"


_SPEC_KEYS = {f.name for f in fields(LayerQuantSpec)}


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass
class QuantConfig:
    """Quantization settings for ``quantize_model``.

    The fields are the defaults for every layer; ``overrides`` maps a layer name or a layer class name (``"Dense"``)
    to a dict of fields for those layers (a name beats a class); layers named in ``skip`` stay float.
    ``preserve`` ("sparsity", "clusters" or both) keeps pruned zeros and clustered shared values through QAT
    (``keras_eff.quantization.preserve``).

    >>> QuantConfig(weight_bits=8, overrides={"Dense": {"weight_bits": 4}, "stem": {"quantize": False}})
    """

    weight_bits: int = 8
    weight_symmetric: bool = True
    weight_granularity: str = "auto"
    activation_bits: int = 8
    activation_symmetric: bool = False
    fold_batchnorm: bool = True
    preserve: tuple = ()
    ema_decay: float = 0.99
    overrides: dict = field(default_factory=dict)
    skip: tuple = ()

    def __post_init__(self):
        self.preserve = check_preserve(self.preserve)
        self._default = LayerQuantSpec(**{k: getattr(self, k) for k in _SPEC_KEYS if k != "quantize"})
        for key, values in self.overrides.items():
            if not isinstance(values, dict):
                raise TypeError(f"overrides[{key!r}] must be a dict of settings, got {type(values).__name__}")
            unknown = set(values) - _SPEC_KEYS
            if unknown:
                raise ValueError(f"overrides[{key!r}] has unknown settings {sorted(unknown)}; known: "
                                 f"{sorted(_SPEC_KEYS)}")
            replace(self._default, **values)  # validates the values
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")
        self.skip = tuple(self.skip)

    def for_layer(self, layer) -> LayerQuantSpec:
        if layer.name in self.skip:
            return replace(self._default, quantize=False)
        spec = self._default
        for cls in reversed(type(layer).__mro__):
            if cls.__name__ in self.overrides:
                spec = replace(spec, **self.overrides[cls.__name__])
        if layer.name in self.overrides:
            spec = replace(spec, **self.overrides[layer.name])
        return spec

    def check_names(self, layer_names, layer_classes):
        """Refuses overrides and skips that name no layer of the model (a typo would otherwise pass silently)."""
        known = set(layer_names) | set(layer_classes)
        unknown = [k for k in list(self.overrides) + list(self.skip) if k not in known]
        if unknown:
            raise ValueError(f"QuantConfig names {unknown}, which match no layer name or layer class of the model; "
                             f"its layers are: {', '.join(sorted(layer_names))}")

    def get_config(self):
        out = asdict(self)
        out["skip"] = list(self.skip)
        out["preserve"] = list(self.preserve)
        return out

    @classmethod
    def from_config(cls, config):
        return cls(**config)
