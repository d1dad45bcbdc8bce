"""LayerFacts: what keras-eff's techniques need to know about one kind of layer, as data.

One record answers, for a layer class (or a Keras op in a functional graph):

- ``kernels``: the weights that are kernels (quantized, pruned, clustered), each with its channel layout: ``"last"``
  (output channels on the last axis: Dense, Conv), ``"depthwise"`` (``(..., c_in, multiplier)``: channel c·m + j) or
  ``"transpose"`` (output channels on the second-to-last axis: ConvTranspose). The last kernel listed maps inputs to
  output channels (the pointwise half of a separable convolution).
- ``output_range``: where int8 TFLite puts the layer's output: ``"own"`` (a range of its own), ``"inherit"`` (its
  input's grid: max pooling, reshapes, padding), ``"shared"`` (one grid for inputs and output: Concatenate, average
  pooling), ``"fixed"`` (a range the runtime fixes, ``fixed_range``: softmax, sigmoid, tanh) or ``"float"`` (no int8
  form known: the layer stays float and is reported).
- ``fuses_activation``: a ReLU/ReLU6 right after it runs inside its int8 op; ``folds_batchnorm``: a BatchNorm right
  after it folds into its kernel and bias; ``per_channel``: int8 TFLite holds one weight scale per output channel.
- ``prunable`` / ``clusterable``: magnitude pruning / weight clustering act on its kernels.
- ``channels``: how output channels relate to input channels, for channel pruning and compression: ``"produce"``
  (it makes new channels: Conv, Dense), ``"follow"`` (per-channel weights that go with a pruned channel: BatchNorm,
  depthwise), ``"pass"`` (channel c in, channel c out: activations, pooling, dropout), ``"merge"`` (several inputs,
  channel by channel: Add), ``"concat"``, ``"flatten"`` or ``"block"`` (anything else: the analysis stops there).
- ``int8_kernel``: whose integer arithmetic the simulation follows at inference (keras-eff's own kernels:
  ``"linear"``, ``"mean"``, ``"average_pool"``, ``"add"``, ``"multiply"``, ``"hard_swish"``); None for a custom layer.

Records are small frozen dataclasses that serialize (``get_config``/``from_config``): a quantized layer keeps the
facts it was made with in its config, so a saved model loads without the registration that produced them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import keras

OUTPUT_RANGES = ("own", "inherit", "shared", "fixed", "float")
LAYOUTS = ("last", "depthwise", "transpose")
CHANNELS = ("produce", "follow", "pass", "merge", "concat", "flatten", "block")
INT8_KERNELS = (None, "linear", "mean", "average_pool", "add", "multiply", "hard_swish")


class LayerFactsError(ValueError):
    """A declaration of layer facts that cannot be right (names the field and, where known, the layer)."""


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass(frozen=True)
class LayerFacts:
    """What keras-eff knows about a kind of layer (see the module docstring for each field)."""

    kernels: dict = field(default_factory=dict)
    output_range: str = "float"
    fixed_range: tuple | None = None
    fuses_activation: bool = False
    folds_batchnorm: bool = False
    per_channel: bool = False
    prunable: bool = False
    clusterable: bool = False
    channels: str = "block"
    int8_kernel: str | None = None

    def __post_init__(self):
        if not isinstance(self.kernels, dict) or not all(isinstance(k, str) for k in self.kernels):
            raise LayerFactsError(f"LayerFacts.kernels must map weight names to a layout {LAYOUTS}, got "
                                  f"{self.kernels!r}")
        bad = {k: v for k, v in self.kernels.items() if v not in LAYOUTS}
        if bad:
            raise LayerFactsError(f"LayerFacts.kernels: layout {bad} must be one of {LAYOUTS}")
        _check("output_range", self.output_range, OUTPUT_RANGES)
        _check("channels", self.channels, CHANNELS)
        _check("int8_kernel", self.int8_kernel, INT8_KERNELS)
        if (self.output_range == "fixed") != (self.fixed_range is not None):
            raise LayerFactsError("LayerFacts: output_range='fixed' goes with fixed_range=(min, max), and only it")
        if self.fixed_range is not None:
            lo, hi = (float(v) for v in self.fixed_range)
            if not lo <= 0.0 <= hi or lo == hi:
                raise LayerFactsError(f"LayerFacts.fixed_range={self.fixed_range!r} must hold 0 and have min < max")
            object.__setattr__(self, "fixed_range", (lo, hi))
        object.__setattr__(self, "kernels", dict(self.kernels))
        for name in ("prunable", "clusterable", "per_channel", "folds_batchnorm"):
            if getattr(self, name) and not self.kernels:
                raise LayerFactsError(f"LayerFacts.{name}=True needs the kernels it acts on (kernels={{...}})")

    @property
    def main_kernel(self) -> str | None:
        """The kernel that maps inputs to output channels (a BatchNorm after the layer folds into it)."""
        return list(self.kernels)[-1] if self.kernels else None

    @property
    def quantizable(self) -> bool:
        """Whether quantize_model puts this layer on int8 grids (anything but ``output_range="float"``)."""
        return self.output_range != "float"

    def replace(self, **changes) -> "LayerFacts":
        return replace(self, **changes)

    def get_config(self) -> dict:
        config = asdict(self)
        config["fixed_range"] = None if self.fixed_range is None else list(self.fixed_range)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "LayerFacts":
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise LayerFactsError(f"LayerFacts config has unknown keys {sorted(unknown)}; allowed: "
                                  f"{sorted(cls.__dataclass_fields__)}")
        config = dict(config)
        if config.get("fixed_range") is not None:
            config["fixed_range"] = tuple(config["fixed_range"])
        return cls(**config)


def _check(name, value, allowed):
    if value not in allowed:
        raise LayerFactsError(f"LayerFacts.{name}={value!r} must be one of {allowed}")
