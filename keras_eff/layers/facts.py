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
  ``"linear"``, ``"mean"``, ``"average_pool"``, ``"add"``, ``"subtract"``, ``"multiply"``, ``"hard_swish"``); None for a
  custom layer.

Records are small frozen dataclasses that serialize (``get_config``/``from_config``): a quantized layer keeps the
facts it was made with in its config, so a saved model loads without the registration that produced them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import keras

OUTPUT_RANGES = ("own", "inherit", "shared", "fixed", "float")
LAYOUTS = ("last", "depthwise", "transpose")
CHANNELS = ("produce", "follow", "pass", "merge", "concat", "flatten", "block")
INT8_KERNELS = (None, "linear", "mean", "average_pool", "add", "subtract", "multiply", "hard_swish")


class LayerFactsError(ValueError):
    """A declaration of layer facts that cannot be right (names the field and, where known, the layer)."""


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass(frozen=True)
class LayerFacts:
    """What keras-eff knows about a kind of layer: which weights are kernels, where int8 TFLite puts its output, what
    fuses or folds into it, whether pruning and clustering act on it, and how its channels flow.

    A frozen dataclass, checked when it is made; it serializes (``get_config``/``from_config``), so a quantized layer
    keeps its facts in a saved model. Declare a custom layer's facts with a ``keras_eff_facts(self)`` method returning
    one, or with `register_layer`; docs/layers.md has the details.

    Attributes:
        kernels: ``{weight name: layout}`` of the weights that are kernels (quantized, pruned, clustered). Layout
            ``"last"`` (output channels on the last axis: Dense, Conv), ``"depthwise"`` (``(..., c_in, multiplier)``)
            or ``"transpose"`` (output channels second to last: ConvTranspose). The last one listed maps inputs to
            output channels.
        output_range: Where int8 TFLite puts the output: ``"own"`` (a range of its own), ``"inherit"`` (its input's
            grid: max pooling, reshapes), ``"shared"`` (one grid for inputs and output: Concatenate, average
            pooling), ``"fixed"`` (a grid the runtime fixes: softmax, sigmoid, tanh) or ``"float"`` (no int8 form:
            stays float and is reported; the default).
        fixed_range: ``(min, max)`` of the fixed grid; given with ``output_range="fixed"`` and only then. It must hold
            0 and have min < max.
        fuses_activation: A ReLU/ReLU6 right after the layer runs inside its int8 op.
        folds_batchnorm: A BatchNorm right after the layer folds into its kernel and bias.
        per_channel: int8 TFLite holds one weight scale per output channel.
        prunable: Magnitude pruning acts on its kernels.
        clusterable: Weight clustering acts on its kernels.
        channels: How output channels relate to input channels, for channel pruning and compression:
            ``"produce"``, ``"follow"``, ``"pass"``, ``"merge"``, ``"concat"``, ``"flatten"`` or ``"block"`` (the
            default: the analysis stops there).
        int8_kernel: Whose integer arithmetic the simulation follows at inference, one of keras-eff's own kernels
            (``"linear"``, ``"mean"``, ``"average_pool"``, ``"add"``, ``"multiply"``, ``"hard_swish"``); leave it None
            for your own layers.

    Raises:
        LayerFactsError: If a value is not one of those allowed, ``output_range="fixed"`` and ``fixed_range`` do not
            go together, or ``prunable``, ``clusterable``, ``per_channel`` or ``folds_batchnorm`` is set without
            kernels. The message names the field.

    Example:
        ```python
        class ScaledDense(keras.layers.Layer):
            ...
            def keras_eff_facts(self):
                return keras_eff.LayerFacts(kernels={"kernel": "last"}, output_range="own", prunable=True,
                                            clusterable=True, channels="produce")
        ```
    """

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
            raise LayerFactsError(
                f"LayerFacts.kernels must map weight names to a layout {LAYOUTS}, got {self.kernels!r}"
            )
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

    def replace(self, **changes) -> LayerFacts:
        """Makes a copy with some fields changed.

        Args:
            **changes: The fields to change and their new values.

        Returns:
            A new `LayerFacts`, checked as when it is made.

        Raises:
            LayerFactsError: If the changed facts are not valid.
        """
        return replace(self, **changes)

    def get_config(self) -> dict:
        """Serializes the facts.

        Returns:
            A dict of the fields (``fixed_range`` as a list), for ``from_config``.
        """
        config = asdict(self)
        config["fixed_range"] = None if self.fixed_range is None else list(self.fixed_range)
        return config

    @classmethod
    def from_config(cls, config: dict) -> LayerFacts:
        """Makes facts from a dict written by ``get_config``.

        Args:
            config: ``{field: value}``.

        Returns:
            A new `LayerFacts`.

        Raises:
            LayerFactsError: If ``config`` has keys that are not fields, or the facts are not valid.
        """
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise LayerFactsError(
                f"LayerFacts config has unknown keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        config = dict(config)
        if config.get("fixed_range") is not None:
            config["fixed_range"] = tuple(config["fixed_range"])
        return cls(**config)


def _check(name, value, allowed):
    if value not in allowed:
        raise LayerFactsError(f"LayerFacts.{name}={value!r} must be one of {allowed}")
