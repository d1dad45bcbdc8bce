"""Which input channels can be pruned, and the weights that change with them.

A channel group is a consumer layer (a Conv2D or a Dense on a vector) whose input channels come, through layers
that act on each channel alone (BatchNorm, activations, pooling, dropout, a depthwise conv), from one producer layer
(a Conv2D or Dense). Removing input channel ``c`` of the consumer removes output channel ``c`` of the producer and
channel ``c`` of every layer between. A tensor on the way that anything else reads (a residual Add, a Concatenate,
a second branch, a model output) ends the search: those channels are not free to go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from ..graph import GraphInfo, clone_layer, rebuild

_ELEMENTWISE = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Dropout, layers.SpatialDropout1D,
                layers.SpatialDropout2D, layers.GaussianNoise, layers.GaussianDropout, layers.Identity)
_SPATIAL = (layers.MaxPooling2D, layers.AveragePooling2D, layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D,
            layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D)
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _single_node(info, layer) -> bool:
    return info.calls(layer) == 1


def is_producer(layer) -> bool:
    """Layers whose output channels can be removed: a plain Conv2D (groups=1) or a Dense layer."""
    if isinstance(layer, layers.Dense):
        return len(layer.kernel.shape) == 2
    return type(layer) is layers.Conv2D and layer.groups == 1 and layer.data_format == "channels_last"


def is_consumer(layer, input_shape) -> bool:
    """Layers whose input channels can be removed and refit: a Conv2D (groups=1) or a Dense on a vector."""
    if isinstance(layer, layers.Dense):
        return len(input_shape) == 2
    return is_producer(layer)


def is_channelwise(layer, input_shape) -> bool:
    """Layers that map channel ``c`` of the input to channel ``c`` of the output and nothing else."""
    if isinstance(layer, layers.BatchNormalization):
        return layer.axis in (-1, len(input_shape) - 1)
    if isinstance(layer, layers.DepthwiseConv2D):
        return layer.depth_multiplier == 1 and layer.data_format == "channels_last"
    if isinstance(layer, layers.Activation):
        return keras.activations.serialize(layer.activation) not in _MIXING_ACTIVATIONS and \
            getattr(layer.activation, "__name__", "") not in _MIXING_ACTIVATIONS
    if isinstance(layer, _SPATIAL):
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    return isinstance(layer, _ELEMENTWISE)


@dataclass
class ChannelGroup:
    """A consumer, its producer and the per-channel layers with weights between them (in graph order)."""

    consumer: str
    producer: str
    channelwise: list = field(default_factory=list)
    channels: int = 0


def find_groups(model) -> list:
    """The channel groups of a model, in graph order of their consumers."""
    info = GraphInfo.of(model)
    producer_of = {id(t): node for node in info.nodes for t in node.outputs}
    groups = []
    for node in info.nodes:
        layer = node.operation
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model) or \
                len(node.input_tensors) != 1 or not _single_node(info, layer) or \
                not is_consumer(layer, node.input_tensors[0].shape):
            continue
        group = _walk_back(info, producer_of, node)
        if group is not None:
            groups.append(group)
    return groups


def _walk_back(info, producer_of, consumer_node):
    tensor, reader, between = consumer_node.input_tensors[0], consumer_node, []
    while True:
        if id(tensor) in info.output_ids or info.consumers.get(id(tensor), []) != [reader]:
            return None
        node = producer_of.get(id(tensor))
        if node is None or not isinstance(node.operation, keras.layers.Layer) or \
                not _single_node(info, node.operation) or len(node.input_tensors) != 1:
            return None
        layer = node.operation
        if is_producer(layer):
            channels = int(layer.kernel.shape[-1])
            return ChannelGroup(consumer_node.operation.name, layer.name, between[::-1], channels)
        if not is_channelwise(layer, node.input_tensors[0].shape):
            return None
        if layer.weights:
            between.append(layer.name)
        tensor, reader = node.input_tensors[0], node


class WeightState:
    """Numpy weights and config changes of the layers a pruning touches, applied by ``build``."""

    def __init__(self, model):
        self.model = model
        self.layers = {layer.name: layer for layer in model.layers}
        self.weights = {}
        self.overrides = {}

    def get(self, name) -> dict:
        if name not in self.weights:
            layer = self.layers[name]
            self.weights[name] = {w.path.split("/")[-1]: np.array(w) for w in layer.weights}
        return self.weights[name]

    def prune_outputs(self, name, keep):
        w = self.get(name)
        w["kernel"] = w["kernel"][..., keep]
        if "bias" in w:
            w["bias"] = w["bias"][keep]
        key = "units" if isinstance(self.layers[name], layers.Dense) else "filters"
        self.overrides[name] = {**self.overrides.get(name, {}), key: len(keep)}

    def prune_channelwise(self, name, keep):
        w = self.get(name)
        for key, value in w.items():
            w[key] = value[:, :, keep, :] if value.ndim == 4 else value[keep]

    def prune_inputs(self, name, keep):
        w = self.get(name)
        w["kernel"] = w["kernel"][keep, :] if w["kernel"].ndim == 2 else w["kernel"][:, :, keep, :]

    def apply(self, group: ChannelGroup, keep):
        """Removes every channel of ``group`` not in ``keep`` (sorted indices)."""
        self.prune_outputs(group.producer, keep)
        for name in group.channelwise:
            self.prune_channelwise(name, keep)
        self.prune_inputs(group.consumer, keep)

    def build(self) -> keras.Model:
        """A new model with the changed layers rebuilt to their new shapes and weights."""
        def transform(rb, node, args, kwargs):
            layer = node.operation
            name = getattr(layer, "name", None)
            if name not in self.weights or self.layers.get(name) is not layer:
                return None
            new = clone_layer(layer, **self.overrides.get(name, {}))
            out = new(*args, **kwargs)
            new.set_weights([self.weights[name][w.path.split("/")[-1]] for w in new.weights])
            return out

        return rebuild(self.model, transform)


__all__ = ["ChannelGroup", "WeightState", "find_groups", "is_channelwise", "is_consumer", "is_producer"]
