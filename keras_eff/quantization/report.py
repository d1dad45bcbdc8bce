"""quantization_report: what a quantized model holds, layer by layer, read from the model itself.

Computed from the model (its wrappers, their settings, the layers left as they were, the reason from the layer
registry), so a model saved and loaded again gives the same report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import keras

from ..graph import GraphInfo
from ..layers import PROTOCOL, facts_for
from . import attention, layer_ops
from . import preserve as preserve_lib
from .attention import QuantizedAttention, QuantizedDotAttention
from .composite import CompositeQuantized
from .quantized_activation import QuantizedActivation
from .quantizers import ActivationQuantizer
from .wrapper import QuantizeWrapper

NO_IMPLEMENTATION = " has no quantized implementation"
SKIPPED = "skipped by QuantConfig"
# What to do about a class quantize_model does not know.
DECLARE_HINT = (
    f"To quantize such a layer, declare its facts: a method {PROTOCOL}() returning keras_eff.LayerFacts on "
    f"your class, or keras_eff.register_layer(TheClass, keras_eff.LayerFacts(...)) for a class you do not "
    f"own (docs/layers.md). To keep it float without this warning, name it in QuantConfig(skip=[...])."
)


def _names(names, limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass
class QuantizationReport:
    """What a quantized model holds, layer by layer: ``keras_eff.quantization.quantization_report(model)``.

    ``str(report)`` gives the counts and the layers kept float; ``float_summary()`` the text ``quantize_model`` warns
    with. Layer names are those of the float model (``"conv"``, not ``"quant_conv"``); nested models included.

    Attributes:
        quantized: Names of the layers quantized, in execution order.
        folded_batchnorm: ``(layer name, BatchNorm name)`` for each BatchNorm folded into the layer before it.
        fused_activations: ``(layer name, "relu", "relu6" or "hard_tanh")`` for each layer with a following ReLU, ReLU6
            or clip to [-1, 1] fused in.
        inherit_range: Names of the layers that keep their input's range (max pooling, reshapes, padding, dropout).
        float_layers: ``(layer name, reason)`` for each layer kept float.
        traced: Names of the layers (a ``Lambda``, a custom layer without weights or whose weights, or Keras ops on
            them, are operands of ADD, SUB, MUL, a division or a matmul's kernel) quantized as the Keras ops they
            compute, each op on its grid as in the file.
        preserved: ``(layer name, what is kept)`` for each layer whose pruned zeros or clusters QAT preserves
            (``"kernel sparsity 50.0%, kernel 16 clusters"``).
        settings: ``{layer name: {setting: value}}`` for each quantized layer: ``activation_bits`` and
            ``activation_symmetric``; for layers with kernels also ``weight_bits``, ``weight_symmetric``,
            ``per_channel`` and ``integer_kernels``.
    """

    quantized: list = field(default_factory=list)
    folded_batchnorm: list = field(default_factory=list)
    fused_activations: list = field(default_factory=list)
    inherit_range: list = field(default_factory=list)
    float_layers: list = field(default_factory=list)
    traced: list = field(default_factory=list)
    preserved: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def float_summary(self) -> str:
        """Describes the layers kept float and what to do about them (the text ``quantize_model`` warns with).

        Returns:
            A few lines: the count, each class with no quantized implementation once with its layers' names and how
            to declare it, the layers whose settings int8 cannot quantize, and the layers skipped by `QuantConfig`.
        """
        by_class: dict[str, list[str]] = {}  # class name -> its layers kept float
        other: list[str] = []
        skipped: list[str] = []
        for name, reason in self.float_layers:
            if reason.endswith(NO_IMPLEMENTATION):
                by_class.setdefault(reason[: -len(NO_IMPLEMENTATION)], []).append(name)
            elif reason == SKIPPED:
                skipped.append(name)
            else:
                other.append(f"{name} ({reason})")
        parts = [f"{cls} ({_names(names)})" for cls, names in by_class.items()]
        summary = (
            f"quantize_model kept {len(self.float_layers)} layers float "
            "(keras_eff.quantization.quantization_report(new_model) lists every layer)."
        )
        lines = [summary]
        if parts:
            lines.append(
                f"Layer classes with no quantized implementation: {'; '.join(parts)}. Each output has a range of "
                "its own so that its readers read int8; the converter computes in int8 what it has kernels for inside "
                f"such a layer, which the simulation may miss by a few LSB. {DECLARE_HINT}"
            )
        if other or skipped:
            lines.append(
                "The file computes these in float, and what reads them, unless to_tflite gets representative_data "
                "for their outputs:"
            )
        if other:
            lines.append(f"Layers of supported classes with settings int8 cannot quantize: {'; '.join(other)}.")
        if skipped:
            lines.append(f"Skipped by QuantConfig: {_names(skipped)}.")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The report as JSON-ready types.

        Returns:
            A dict with one key per attribute, pairs as lists.
        """
        out = asdict(self)
        for key in ("folded_batchnorm", "fused_activations", "float_layers", "preserved"):
            out[key] = [list(pair) for pair in out[key]]
        return out

    def __str__(self):
        summary = (
            f"{len(self.quantized)} layers quantized, {len(self.folded_batchnorm)} BatchNorms folded, "
            f"{len(self.fused_activations)} activations fused, {len(self.inherit_range)} layers inherit ranges"
        )
        lines = [summary]
        lines += [f"  kept float: {name} ({reason})" for name, reason in self.float_layers]
        lines += [f"  quantized as its Keras ops: {name}" for name in self.traced]
        lines += [f"  preserved: {name} ({what})" for name, what in self.preserved]
        return "\n".join(lines)


def _wrapper_settings(wrapper) -> dict:
    out = {"activation_bits": wrapper.activation_bits, "activation_symmetric": wrapper.activation_symmetric}
    if wrapper.has_kernel:
        out.update(
            weight_bits=wrapper.weight_bits,
            weight_symmetric=wrapper.weight_symmetric,
            per_channel=wrapper.per_channel,
            integer_kernels=wrapper.integer_kernels,
        )
    return out


def float_reason(op, node=None) -> str:
    """Why ``quantize_model`` leaves a layer of a quantized model float, from the layer registry: no quantized
    implementation, settings int8 cannot quantize (channels_first, grouped, causal padding; an attention form it does
    not swap), or else ``QuantConfig`` skipped it."""
    facts = facts_for(op)
    if isinstance(op, keras.layers.MultiHeadAttention) and node is not None:
        reason = attention.supported_reason(op, node)
        return f"MultiHeadAttention with {reason}" if reason else SKIPPED
    if isinstance(op, keras.layers.Attention) and node is not None:
        reason = attention.dot_supported_reason(op, node)
        return f"Attention with {reason}" if reason else SKIPPED
    if not facts.quantizable:
        return f"{type(op).__name__}{NO_IMPLEMENTATION}"
    if facts.kernels and isinstance(op, layer_ops.SUPPORTED):
        return layer_ops.unsupported_reason(op) or SKIPPED
    return SKIPPED


def _feeds_only_ranges(info, node) -> bool:
    """Whether every reader of the node's output is an ActivationQuantizer: a layer ``quantize_model`` put in front
    of a range (the ReLU fused after a Keras op), part of the quantized computation."""
    readers = info.node_consumers(node)
    return bool(readers) and all(
        isinstance(r.operation, ActivationQuantizer) and not r.operation.after_float for r in readers
    )


def owned_ranges(op) -> list:
    """The activation ranges a layer of a quantized graph owns: itself for an `ActivationQuantizer`, a composite
    layer's steps, a wrapper's own quantizers; none for other layers."""
    if isinstance(op, ActivationQuantizer):
        return [op]
    if isinstance(op, CompositeQuantized):
        return list(op.step_quantizers)
    if isinstance(op, QuantizeWrapper):
        return [q for q in op._owned() if q is not None]
    return []


def traced_from(op):
    """The name of the traced layer whose ops ``op`` quantizes (``ActivationQuantizer.traced_from``, or the op's own
    for one on its input's grid, `ClipOnInputGrid`), or None."""
    own = getattr(op, "traced_from", None)
    return own or next((q.traced_from for q in owned_ranges(op) if q.traced_from), None)


def _walk(model, report):
    info = GraphInfo.of(model)
    for node in info.nodes:
        op = node.operation
        traced = traced_from(op)
        if traced and traced not in report.traced:
            report.traced.append(traced)
        if isinstance(op, keras.Model):
            _walk(op, report)
        elif isinstance(op, QuantizeWrapper):
            name = op.layer.name
            if name in report.quantized:  # a layer called several times: a wrapper per call, all holding it
                continue
            report.quantized.append(name)
            if op.batchnorm is not None and op.batchnorm.name != name:  # not a standalone BN run as a depthwise conv
                report.folded_batchnorm.append((name, op.batchnorm.name))
            if op.fused_activation != "linear":
                report.fused_activations.append((name, op.fused_activation))
            if op.preserve and getattr(op, "preserved", None):
                report.preserved.append((name, preserve_lib.describe(op)))
            report.settings[name] = _wrapper_settings(op)
        elif isinstance(op, QuantizedAttention):
            report.quantized.append(op.name)
            report.settings[op.name] = {
                "activation_bits": op.bits,
                "activation_symmetric": op.symmetric,
                "weight_bits": op.weight_bits,
                "weight_symmetric": True,
                "per_channel": False,
            }
        elif isinstance(op, (QuantizedDotAttention, QuantizedActivation)):
            report.quantized.append(op.name)
            report.settings[op.name] = {"activation_bits": op.bits, "activation_symmetric": op.symmetric}
        elif (
            isinstance(op, (ActivationQuantizer, CompositeQuantized))
            or not isinstance(op, keras.layers.Layer)
            or _feeds_only_ranges(info, node)
        ):
            continue  # ranges, the steps of a LayerNormalization, Keras ops: parts of a quantized computation
        elif facts_for(op).output_range == "inherit":
            if op.name not in report.inherit_range:
                report.inherit_range.append(op.name)
        elif not any(name == op.name for name, _ in report.float_layers):  # (a layer called several times: once)
            report.float_layers.append((op.name, float_reason(op, node)))


def quantization_report(model) -> QuantizationReport:
    """Describes a quantized model layer by layer: what is quantized and with which settings, what is kept float
    and why.

    Read from the model itself (its wrappers and their settings; for a layer left float, the reason from the layer
    registry), so it is the same for the model ``quantize_model`` returned and for that model saved and loaded
    again. Nested models are included.

    Args:
        model: A model made by ``quantize_model`` (or a Functional/Sequential model holding ``keras_eff.quantize``
            layers), trained or not. Not changed.

    Returns:
        A `QuantizationReport`.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        qat = keras_eff.quantize_model(model)
        report = keras_eff.quantization.quantization_report(qat)
        print(report)
        print(report.float_layers)  # [(name, reason), ...]
        ```
    """
    report = QuantizationReport()
    _walk(model, report)
    return report


__all__ = ["QuantizationReport", "float_reason", "quantization_report"]
