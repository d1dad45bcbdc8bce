"""Which input channels can be pruned, and the weights that change with them.

A channel group is a consumer layer (a Conv2D or a Dense on a vector) whose input channels come, through layers
that act on each channel alone (BatchNorm, activations, pooling, dropout, a depthwise conv), from one producer layer
(a Conv2D or Dense). Removing input channel ``c`` of the consumer removes output channel ``c`` of the producer and
channel ``c`` of every layer between. A tensor on the way that anything else reads (a residual Add, a Concatenate,
a second branch, a model output) ends the search: those channels are not free to go.

The walk is the channel-graph analysis every technique shares (``keras_eff.graph.channels``, roles from the layer
registry); this module adds compression's own condition (``refittable``) and the weight edits (``WeightState``).
"""

from __future__ import annotations

import keras
import numpy as np

from ..graph import clone_layer, rebuild
from ..graph.channels import ChannelChain, channel_chains
from ..layers import kernel_layout, kernel_names

# One chain of the channel-graph analysis (keras_eff.graph.channels) is one channel group here.
ChannelGroup = ChannelChain


def _dense_like(layer) -> bool:
    """A kernel (inputs, outputs): what refits on input vectors (a Dense layer)."""
    return len(_main_kernel(layer).shape) == 2


def _main_kernel(layer):
    names = kernel_names(layer)
    weights = {w.path.split("/")[-1]: w for w in layer.weights}
    return weights[names[-1]]


def refittable(layer, input_shape=None) -> bool:
    """Compression's own condition on top of the channel roles: its least-squares refit (``reconstruction.py``) is
    written for Dense kernels on vectors and for 2-D convolutions; ``input_shape`` is a consumer's."""
    if not kernel_names(layer):
        return False
    if _dense_like(layer):
        return input_shape is None or len(input_shape) == 2
    return len(_main_kernel(layer).shape) == 4 and len(getattr(layer, "kernel_size", ())) == 2


def find_groups(model) -> list:
    """Finds the channel groups `channel_pruning` can prune: the input channels of a consumer that can go with the
    output channels of the producer before it.

    It is ``keras_eff.graph.channel_chains`` with compression's own condition: the consumer and producer are
    Dense layers on vectors or 2-D convolutions, which the least-squares refit handles.

    Args:
        model: A Functional or Sequential model. Not changed.

    Returns:
        A list of `ChannelGroup` (``keras_eff.graph.ChannelChain``), in graph order of their consumers.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
    """
    return channel_chains(model, refittable)


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
        key = "units" if _dense_like(self.layers[name]) else "filters"
        self.overrides[name] = {**self.overrides.get(name, {}), key: len(keep)}

    def prune_channelwise(self, name, keep):
        w = self.get(name)
        layer = self.layers[name]
        for key, value in w.items():  # a depthwise kernel (..., c, 1) on its channel axis; vectors (BN, bias) as is
            w[key] = (
                np.take(value, keep, axis=-2)
                if key in kernel_names(layer) and kernel_layout(layer, key) == "depthwise"
                else value[keep]
            )

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


__all__ = ["ChannelGroup", "WeightState", "find_groups", "refittable"]
