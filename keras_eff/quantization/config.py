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
    """The quantization settings that apply to one layer, as ``QuantConfig.for_layer`` resolves them.

    Frozen; made by ``QuantConfig`` from its defaults and ``overrides``. The field names are the keys an
    ``overrides`` entry may set.

    Attributes:
        weight_bits: Bits of the kernels, 2 to 16 (int8 TFLite holds at most 8).
        weight_symmetric: Symmetric kernel ranges (±max|w|, what int8 TFLite stores) or asymmetric ones.
        weight_granularity: ``"auto"`` (per-channel where int8 TFLite holds it, as the layer registry says),
            ``"per_channel"`` or ``"per_tensor"``.
        activation_bits: Bits of the activation ranges, 2 to 16 (int8 TFLite needs 8).
        activation_symmetric: Symmetric activation ranges instead of the default asymmetric ones.
        fold_batchnorm: Fold a BatchNormalization that directly follows a conv or dense layer into it.
        preserve: A tuple of ``"sparsity"``, ``"clusters"`` or both: keep pruned zeros and clustered shared values
            through QAT.
        quantize: False keeps the layer float (a layer named in ``QuantConfig.skip``).

    Raises:
        ValueError: If a bit width is outside 2 to 16, ``weight_granularity`` is not one of ``"auto"``,
            ``"per_channel"``, ``"per_tensor"``, or ``preserve`` names something else than ``"sparsity"`` and
            ``"clusters"``.
    """

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
        """Whether ``layer``'s kernels get one range per output channel under these settings.

        Args:
            layer: The Keras layer the settings apply to.

        Returns:
            True for per-channel ranges, False for one range per tensor. With ``weight_granularity="auto"``: the
            layer registry's ``per_channel`` fact (Conv and DepthwiseConv per channel, Dense and Conv2DTranspose per
            tensor).
        """
        if self.weight_granularity == "auto":
            return facts_for(layer).per_channel  # where int8 TFLite holds per-channel scales (the registry)
        return self.weight_granularity == "per_channel"


_SPEC_KEYS = {f.name for f in fields(LayerQuantSpec)}


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass
class QuantConfig:
    """Quantization settings for ``quantize_model``: defaults for every layer, per-layer overrides, skips.

    The fields ``weight_bits`` to ``preserve`` are the defaults for every layer. ``overrides`` maps a layer name or a
    layer class name (``"Dense"``, matched along the class's bases too) to a dict of ``LayerQuantSpec`` fields for
    those layers; a layer name beats a class name. ``quantize_model`` refuses overrides and skips that name no layer
    of the model. A Keras-serializable object (``get_config``/``from_config``).

    What int8 TFLite holds: symmetric weights of 2 to 8 bits, 8-bit activations. Other settings simulate (for
    research) but are refused at export, naming the layer and the setting.

    Attributes:
        weight_bits: Bits of the kernels, 2 to 16.
        weight_symmetric: Symmetric kernel ranges (±max|w|, what int8 TFLite stores) or asymmetric ones.
        weight_granularity: ``"auto"`` (per-channel for Conv and DepthwiseConv, per-tensor for Dense and
            Conv2DTranspose, where the converter holds per-channel scales; per-tensor for the 1×1 depthwise kernel a
            standalone BatchNormalization runs as, like the converter's per-tensor MUL), ``"per_channel"`` or
            ``"per_tensor"``.
        activation_bits: Bits of the activation ranges, 2 to 16 (int8 TFLite needs 8).
        activation_symmetric: Symmetric activation ranges instead of the default asymmetric ones.
        fold_batchnorm: Fold a BatchNormalization that directly follows a conv or dense layer into its kernel and bias.
        preserve: ``"sparsity"``, ``"clusters"`` or both: QAT keeps the zeros of pruned kernels and the shared values
            of clustered ones (``keras_eff.quantization.preserve``). Normalized to a tuple.
        ema_decay: Decay of the moving average that trains activation ranges, in [0, 1).
        overrides: ``{layer name or class name: {field: value}}``; the fields are those of ``LayerQuantSpec``,
            ``"quantize": False`` included.
        skip: Names of layers to keep float.

    Raises:
        ValueError: If a setting is out of range (bits outside 2 to 16, an unknown granularity or preserve value,
            ``ema_decay`` outside [0, 1)) or an ``overrides`` entry has an unknown key.
        TypeError: If an ``overrides`` value is not a dict.

    Example:
        ```python
        config = keras_eff.QuantConfig(overrides={"Dense": {"weight_bits": 4}, "stem": {"quantize": False}},
                                       skip=["head"])
        qat = keras_eff.quantize_model(model, config)
        ```
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
                raise ValueError(
                    f"overrides[{key!r}] has unknown settings {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}"
                )
            replace(self._default, **values)  # validates the values
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must lie in [0, 1)")
        self.skip = tuple(self.skip)

    def for_layer(self, layer) -> LayerQuantSpec:
        """The settings for one layer: the defaults, then class overrides (base classes first), then its name's.

        Args:
            layer: A Keras layer of the model being quantized.

        Returns:
            A `LayerQuantSpec`; ``quantize=False`` for a layer named in ``skip``.
        """
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
        """Refuses overrides and skips that name no layer of the model (a typo would otherwise pass silently).

        Args:
            layer_names: The names of the model's layers (nested models included).
            layer_classes: The class names of the model's layers and of their base classes.

        Returns:
            None.

        Raises:
            ValueError: If a key of ``overrides`` or a name in ``skip`` matches no layer name or class; the message
                lists the model's layers.
        """
        known = set(layer_names) | set(layer_classes)
        unknown = [k for k in list(self.overrides) + list(self.skip) if k not in known]
        if unknown:
            raise ValueError(
                f"QuantConfig names {unknown}, which match no layer name or layer class of the model; "
                f"its layers are: {', '.join(sorted(layer_names))}"
            )

    def get_config(self):
        out = asdict(self)
        out["skip"] = list(self.skip)
        out["preserve"] = list(self.preserve)
        return out

    @classmethod
    def from_config(cls, config):
        return cls(**config)
