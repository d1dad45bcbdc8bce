"""MACs and parameters of a Keras model, per layer and in total, counted from its graph's shapes for one sample.

The formulas are those TFLite's ops imply, so the totals agree with ``tflite_export.count_macs`` on the converted
model: a convolution costs ``out_positions · c_out · k · c_in / groups``, a depthwise convolution
``out_positions · c_in · multiplier · k``, a separable one both halves, a transposed convolution
``in_positions · c_in · k · c_out`` and a dense layer ``rows · units · in``. Other layers (BatchNorm, pooling,
activations, Add) count no MACs and are not listed. Parameters are the layer's own weights (kernel and bias); a
BatchNorm folded into a convolution by the converter gives that convolution a bias in TFLite that is not counted here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from ..graph import GraphInfo
from ..layers import facts_for


def counted(layer) -> bool:
    """Whether ``layer`` multiplies its inputs by kernels: the registry's kernels of a layer whose kernels are
    ``clusterable`` (Dense and every convolution; an Embedding's table is a kernel too, but a lookup: it is not)."""
    facts = facts_for(layer)
    return bool(facts.kernels) and facts.clusterable


@dataclass
class LayerCost:
    """One layer call's multiply-accumulates and its layer's weight count.

    Attributes:
        name: The layer's name (``outer/inner`` for a layer of a nested model).
        kind: The layer's class name.
        macs: Multiply-accumulates of this call, for one sample.
        params: The layer's weights (kernel and bias); 0 for the second and later calls of a shared layer.
    """

    name: str
    kind: str
    macs: int
    params: int

    def as_dict(self) -> dict:
        """Gives the cost as a dict.

        Returns:
            ``{"name", "kind", "macs", "params"}``.
        """
        return asdict(self)


@dataclass
class ModelCost:
    """Per-layer costs of a model in graph order, with totals; made by `count_macs`.

    Attributes:
        layers: The `LayerCost` of every counted layer call (conv, depthwise, separable, transposed and dense
            layers), in graph order.
    """

    layers: list = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        """MACs of the whole model, for one sample."""
        return sum(c.macs for c in self.layers)

    @property
    def total_params(self) -> int:
        """Weights of the counted layers."""
        return sum(c.params for c in self.layers)

    def total(self, metric: str = "macs") -> int:
        """Gives a total by metric name.

        Args:
            metric: ``"macs"``; anything else gives the parameters.

        Returns:
            `total_macs` or `total_params`.
        """
        return self.total_macs if metric == "macs" else self.total_params

    def by_name(self) -> dict:
        """Indexes the costs by layer name.

        Returns:
            ``{layer name: LayerCost}`` (the last call of a layer called several times).
        """
        return {c.name: c for c in self.layers}

    def as_rows(self) -> list:
        """Lists the costs as table rows.

        Returns:
            One dict per layer call (see `LayerCost.as_dict`), for a table.
        """
        return [c.as_dict() for c in self.layers]


def _size(shape) -> int:
    return int(np.prod([int(d) for d in shape])) if len(shape) else 1


def layer_macs(layer, input_shape, output_shape) -> int | None:
    """MACs of one call of ``layer`` for one sample (shapes include the batch axis), or None for a layer that
    multiplies nothing (pooling, BatchNorm, activations...)."""
    if not counted(layer):
        return None
    out = _size(output_shape[1:])
    weights = {w.path.split("/")[-1]: w for w in layer.weights}
    kernels = [(tuple(weights[n].shape), layout) for n, layout in facts_for(layer).kernels.items()]
    if len(kernels) == 2 and kernels[0][1] == "depthwise":  # separable: depthwise, then pointwise (1, ..., mid, out)
        depthwise, pointwise = kernels[0][0], kernels[1][0]  # (k..., c_in, multiplier)
        mid = _size(depthwise[-2:])
        positions = out // pointwise[-1]
        return positions * mid * _size(depthwise[:-2]) + out * mid
    ((shape, layout),) = kernels[-1:]
    if layout == "depthwise":  # (k..., c_in, multiplier)
        return out * _size(shape[:-2])
    if layout == "transpose":  # kernel (k..., c_out, c_in); every input value is spread over k · c_out
        return _size(input_shape[1:]) * _size(shape[:-2]) * shape[-2]
    return out * _size(shape[:-1])  # (k..., c_in / groups, c_out); a dense kernel (in, units)


def count_macs(model) -> ModelCost:
    """Counts the multiply-accumulates and weights of a model's conv and dense layers, per layer and in total.

    The formulas are those TFLite's ops imply, so the MACs agree with ``tflite_export.count_macs`` on the converted
    model. Layers without kernels (BatchNorm, pooling, activations, Add) count nothing and are not listed. A layer
    called several times counts its MACs at every call and its weights once; nested models are included, their layers
    named ``outer/inner``.

    Args:
        model: A built Functional or Sequential model. Not changed.

    Returns:
        A `ModelCost` (``.layers``, ``.total_macs``, ``.total_params``, ``.by_name()``), MACs for one sample.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        cost = keras_eff.compression.count_macs(model)
        print(f"{cost.total_macs:,} MACs, {cost.total_params:,} parameters")
        ```
    """
    cost = ModelCost()
    _count(model, "", cost, set())
    return cost


def _count(model, prefix, cost, seen):
    for node in GraphInfo.of(model).nodes:
        op = node.operation
        if isinstance(op, keras.Model):
            _count(op, f"{prefix}{op.name}/", cost, seen)
            continue
        if not isinstance(op, keras.layers.Layer) or not node.input_tensors:
            continue
        macs = layer_macs(op, node.input_tensors[0].shape, node.outputs[0].shape)
        if macs is None:
            continue
        params = 0 if id(op) in seen else int(sum(_size(w.shape) for w in op.weights))
        seen.add(id(op))
        cost.layers.append(LayerCost(prefix + op.name, type(op).__name__, int(macs), params))


__all__ = ["LayerCost", "ModelCost", "count_macs", "counted", "layer_macs"]
