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
from keras import layers

from ..graph import GraphInfo

_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_TRANSPOSE = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
_CONV = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
COUNTED = _SEPARABLE + _DEPTHWISE + _TRANSPOSE + _CONV + (layers.Dense,)


@dataclass
class LayerCost:
    """One layer call's multiply-accumulates and its layer's weight count."""

    name: str
    kind: str
    macs: int
    params: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelCost:
    """Per-layer costs of a model in graph order, with totals."""

    layers: list = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(c.macs for c in self.layers)

    @property
    def total_params(self) -> int:
        return sum(c.params for c in self.layers)

    def total(self, metric: str = "macs") -> int:
        return self.total_macs if metric == "macs" else self.total_params

    def by_name(self) -> dict:
        return {c.name: c for c in self.layers}

    def as_rows(self) -> list:
        return [c.as_dict() for c in self.layers]


def _size(shape) -> int:
    return int(np.prod([int(d) for d in shape])) if len(shape) else 1


def layer_macs(layer, input_shape, output_shape) -> int | None:
    """MACs of one call of ``layer`` for one sample (shapes include the batch axis), or None for a layer that
    multiplies nothing (pooling, BatchNorm, activations...)."""
    out = _size(output_shape[1:])
    if isinstance(layer, _SEPARABLE):
        depthwise = layer.depthwise_kernel.shape  # (k..., c_in, multiplier)
        mid = _size(depthwise[-2:])
        positions = out // layer.filters
        return positions * mid * _size(depthwise[:-2]) + out * mid
    if isinstance(layer, _DEPTHWISE):
        return out * _size(layer.kernel.shape[:-2])
    if isinstance(layer, _TRANSPOSE):  # kernel (k..., c_out, c_in); every input value is spread over k · c_out
        return _size(input_shape[1:]) * _size(layer.kernel.shape[:-2]) * layer.kernel.shape[-2]
    if isinstance(layer, _CONV):  # kernel (k..., c_in / groups, c_out)
        return out * _size(layer.kernel.shape[:-1])
    if isinstance(layer, layers.Dense):
        return out * layer.kernel.shape[0]
    return None


def count_macs(model) -> ModelCost:
    """Per-layer MACs and parameters of a built Functional or Sequential model (nested models included, their
    layers named ``outer/inner``). A layer called several times counts its MACs at every call, its weights once."""
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


__all__ = ["COUNTED", "LayerCost", "ModelCost", "count_macs", "layer_macs"]
