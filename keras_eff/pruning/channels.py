"""How pruned channels flow through a graph: which filters can be pruned, which layers prune together.

A *producer* (Conv, Dense) creates output channels. From it the channels flow through *pass* layers (activations
with f(0) = 0, pooling, dropout, padding), *followers* (BatchNorm, depthwise conv: per-channel weights masked with
the channel) and *merges* (Add and friends, whose inputs must keep the same channels: the producers behind them form
one group), until *consumers* (the next Conv/Dense, directly or after Flatten or Concatenate) whose matching input
channels are dropped. Anything else on the way (a model output, Reshape, a nested model, an activation with
f(0) ≠ 0, ...) makes the group unprunable, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from ..graph import GraphInfo
from .structured import CHANNEL_PRODUCERS, unprunable_reason

PASS = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Activation, layers.MaxPooling1D, layers.MaxPooling2D,
        layers.MaxPooling3D, layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
        layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D,
        layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D, layers.Dropout,
        layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D, layers.GaussianNoise,
        layers.GaussianDropout, layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D,
        layers.Cropping1D, layers.Cropping2D, layers.Cropping3D, layers.UpSampling1D, layers.UpSampling2D,
        layers.UpSampling3D, layers.Identity)
MERGE = (layers.Add, layers.Subtract, layers.Average, layers.Maximum, layers.Minimum, layers.Multiply)
FOLLOWERS = (layers.BatchNormalization, layers.DepthwiseConv1D, layers.DepthwiseConv2D)


def _zero_preserving(activation) -> bool:
    if activation is None:
        return True
    value = keras.ops.convert_to_numpy(keras.activations.get(activation)(keras.ops.zeros((1,))))
    return bool(np.all(value == 0))


def kind(op) -> str:
    """producer, follower, pass, merge, concat, flatten or block."""
    if isinstance(op, CHANNEL_PRODUCERS):
        if unprunable_reason(op, "channels") or not _zero_preserving(getattr(op, "activation", None)):
            return "block"
        return "producer"
    if isinstance(op, layers.BatchNormalization):
        return "follower" if op.axis in (-1, len(op.input.shape) - 1) else "block"
    if isinstance(op, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        ok = op.depth_multiplier == 1 and op.data_format == "channels_last" and _zero_preserving(op.activation)
        return "follower" if ok else "block"
    if isinstance(op, layers.Activation):
        return "pass" if _zero_preserving(op.activation) else "block"
    if isinstance(op, layers.ELU) or isinstance(op, PASS):
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return "block"
        if isinstance(op, (layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D,
                           layers.GlobalAveragePooling3D, layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D,
                           layers.GlobalMaxPooling3D)) and getattr(op, "data_format", None) == "channels_first":
            return "block"
        return "pass"
    if isinstance(op, MERGE):
        return "merge"
    if isinstance(op, layers.Concatenate):
        return "concat" if op.axis in (-1, len(op.input[0].shape) - 1) else "block"
    if isinstance(op, layers.Flatten):
        return "flatten" if getattr(op, "data_format", "channels_last") == "channels_last" else "block"
    return "block"


def _name(node) -> str:
    op = node.operation
    return f"{getattr(op, 'name', op)!s} ({type(op).__name__})"


@dataclass
class ChannelGroup:
    """Producers whose output channels are pruned with one mask, the followers masked with them, and why the group
    cannot be pruned (None when it can)."""

    producers: list = field(default_factory=list)
    followers: list = field(default_factory=list)
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.producers[0]


def _unite(info: GraphInfo, start_node):
    """The group that ``start_node``'s producer belongs to, found by walking forward and back through merges."""
    group = ChannelGroup()
    todo, seen_producers, seen_nodes = [start_node], set(), set()

    def refuse(msg):
        if group.reason is None:
            group.reason = msg

    def backward(tensor, merge):
        node = info.producer_of.get(id(tensor))
        if node is None:
            return refuse(f"{_name(merge)} adds a model input to the channels; they cannot be pruned")
        k = kind(node.operation)
        if k == "producer":
            if id(node) not in seen_producers:
                todo.append(node)
        elif k in ("follower", "pass"):
            backward(node.input_tensors[0], merge)
        elif k == "merge":
            for t in node.input_tensors:
                backward(t, merge)
        else:
            refuse(f"{_name(merge)} joins these channels with the output of {_name(node)}, whose channels cannot "
                   f"be pruned with them")

    def forward(node, mixed):
        for t in node.outputs:
            if id(t) in info.output_ids:
                src = group.producers[0]
                via = "" if node.operation.name == src else f" (through {_name(node)})"
                refuse(f"the output channels of {src!r} are a model output{via}; they must stay")
        for consumer in info.node_consumers(node):
            k = kind(consumer.operation)
            if k == "producer":
                continue
            if id(consumer) in seen_nodes:
                continue
            seen_nodes.add(id(consumer))
            if k == "pass":
                forward(consumer, mixed)
            elif k == "follower" and not mixed:
                group.followers.append(consumer.operation.name)
                forward(consumer, mixed)
            elif k == "merge" and not mixed:
                for t in consumer.input_tensors:
                    backward(t, consumer)
                forward(consumer, mixed)
            elif k in ("concat", "flatten"):
                forward(consumer, True)
            else:
                after = " after a Concatenate or Flatten" if mixed else ""
                refuse(f"the channels of {group.producers[0]!r} reach {_name(consumer)}{after}, which channel "
                       f"pruning cannot follow")

    while todo:
        node = todo.pop(0)
        if id(node) in seen_producers:
            continue
        seen_producers.add(id(node))
        group.producers.append(node.operation.name)
        forward(node, False)
    return group


def channel_groups(model, candidates=None) -> list:
    """The channel groups of ``model``'s graph holding the producers named in ``candidates`` (all by default)."""
    info = GraphInfo.of(model)
    info.producer_of = {id(t): node for node in info.nodes for t in node.outputs}
    groups, placed = [], set()
    for node in info.nodes:
        op = node.operation
        if not isinstance(op, CHANNEL_PRODUCERS) or op.name in placed:
            continue
        if candidates is not None and op.name not in candidates:
            continue
        if kind(op) != "producer":
            reason = unprunable_reason(op, "channels") or (
                f"layer {op.name!r} has activation {op.activation.__name__}, which is not 0 at 0, so a pruned "
                f"filter would still output a constant")
            groups.append(ChannelGroup([op.name], [], reason))
            placed.add(op.name)
            continue
        group = _unite(info, node)
        placed.update(group.producers)
        groups.append(group)
    return groups
