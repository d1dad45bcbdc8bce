"""How channels flow through a Keras graph: one analysis, read from the registry's ``channels`` facts, for
structured pruning (``keras_eff.pruning``: filters pruned with masks, then removed) and for channel pruning
(``keras_eff.compression``: input channels removed and the weights refit).

Each layer has a *role* (``channel_role``): the registry's ``channels`` fact, kept only where the instance allows it:

- ``"producer"`` (``produce``: Conv, Dense) creates output channels, and reads input channels that can be dropped;
  it needs ``groups=1`` and channels_last;
- ``"follower"`` (``follow``: BatchNorm, depthwise conv) has per-channel weights that go with a channel; it needs its
  axis on the channels (BatchNorm), ``depth_multiplier=1`` and channels_last;
- ``"pass"`` (activations, pooling, dropout, padding) maps channel c to channel c; it needs channels_last, no
  weights of its own and no per-channel constants (a Normalization's mean, a Rescaling by a vector), and an
  activation that does not mix channels (softmax);
- ``"merge"`` (Add and friends), ``"concat"`` (on the channel axis), ``"flatten"`` (channels_last);
- ``"block"``: anything else; the analysis stops there.

With ``constant_ok=False`` (pruning: a pruned filter stays in the graph as zeros until strip) producers, followers and
pass layers must also map 0 to 0; compression removes the channel at once and refits what reads it, so it need not.

Two analyses read these roles:

- ``channel_groups``: the producers whose channels must be pruned together (joined through merges), the followers
  masked with them, and why a group cannot be pruned (pruning's ``structure="channels"``);
- ``channel_chains``: single chains producer → followers/pass layers → consumer in which nothing else reads the
  channels (compression's channel pruning).

``remove_channels`` rewrites a plain model without the output channels of some producers (``keras_eff.strip`` with
``remove_pruned_channels=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from ..layers import activation_name, facts_for, kernel_layout
from .rewrite import GraphInfo, clone_layer, rebuild

_ROLE = {
    "produce": "producer",
    "follow": "follower",
    "pass": "pass",
    "merge": "merge",
    "concat": "concat",
    "flatten": "flatten",
}
# Activations that mix the channels of a position: not channel by channel.
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def zero_preserving(activation) -> bool:
    """Whether ``activation(0) == 0`` (None is the identity)."""
    if activation is None:
        return True
    value = keras.ops.convert_to_numpy(keras.activations.get(activation)(keras.ops.zeros((1,))))
    return bool(np.all(value == 0))


def _channels_last(op) -> bool:
    return getattr(op, "data_format", "channels_last") == "channels_last"


def _on_last_axis(axis, rank) -> bool:
    return axis in (-1, rank - 1)


def _input_rank(op, node=None, index=0) -> int:
    if node is not None:
        return len(node.input_tensors[index].shape)
    inputs = op.input
    return len((inputs[index] if isinstance(inputs, (list, tuple)) else inputs).shape)


def _mixes_channels(op) -> bool:
    activation = getattr(op, "activation", None)
    if activation is None:
        return False
    return (
        activation_name(activation) in _MIXING_ACTIVATIONS or getattr(activation, "__name__", "") in _MIXING_ACTIVATIONS
    )


def _makes_constants(op) -> bool:
    """Whether a 0 input gives a non-zero output: an activation with f(0) ≠ 0, or an offset (Rescaling)."""
    if hasattr(op, "activation") and not zero_preserving(op.activation):
        return True
    return bool(np.any(np.asarray(getattr(op, "offset", 0.0)) != 0))


def producer_problem(op, constant_ok=False) -> str | None:
    """Why ``op`` cannot have its output channels removed (None: it can). The messages are channel pruning's."""
    kind = type(op).__name__
    if facts_for(op).channels != "produce":
        return (
            f"layer {op.name!r} ({kind}) cannot have its output channels pruned; channel pruning "
            f"acts on Conv1D/2D/3D and Dense (depthwise channels follow the layer before them)"
        )
    if getattr(op, "groups", 1) != 1:
        return f"layer {op.name!r} is a grouped convolution (groups={op.groups}); channel pruning needs groups=1"
    if not _channels_last(op):
        return f"layer {op.name!r} is channels_first; channel pruning needs channels_last"
    if not constant_ok and _makes_constants(op):
        name = activation_name(getattr(op, "activation", None))
        return (
            f"layer {op.name!r} has activation {name}, which is not 0 at 0, so a pruned filter would still "
            f"output a constant"
        )
    return None


def channel_role(op, node=None, constant_ok=False) -> str:
    """Gives a layer's role in the channel analysis (see the module docstring).

    The role is the layer registry's ``channels`` fact, kept only where the instance allows it (channels_last,
    ``groups=1``, a BatchNorm on the channel axis ...); otherwise ``"block"``.

    Args:
        op: A layer or Keras operation of a functional graph; models and non-layers are ``"block"``.
        node: The call whose input shapes to read; None: the layer's first call.
        constant_ok: Whether a layer that turns 0 into a non-zero value (an activation with f(0) ≠ 0, an offset) may
            keep its role: True for compression, which removes channels at once; False for pruning, where a pruned
            channel stays in the graph as zeros.

    Returns:
        ``"producer"``, ``"follower"``, ``"pass"``, ``"merge"``, ``"concat"``, ``"flatten"`` or ``"block"``.
    """
    if not isinstance(op, keras.layers.Layer) or isinstance(op, keras.Model):
        return "block"
    role = _ROLE.get(facts_for(op).channels, "block")
    if role == "producer":
        return role if producer_problem(op, constant_ok) is None else "block"
    if role == "follower":
        ok = (
            _channels_last(op)
            and getattr(op, "depth_multiplier", 1) == 1
            and (not hasattr(op, "axis") or _on_last_axis(op.axis, _input_rank(op, node)))
            and (constant_ok or not _makes_constants(op))
        )
        return role if ok else "block"
    if role == "pass":
        per_channel_constants = any(np.ndim(getattr(op, a, 0.0)) > 0 for a in ("scale", "offset"))
        ok = (
            _channels_last(op)
            and not op.weights
            and not per_channel_constants
            and not _mixes_channels(op)
            and (constant_ok or not _makes_constants(op))
        )
        return role if ok else "block"
    if role == "concat":
        return role if _on_last_axis(op.axis, _input_rank(op, node)) else "block"
    if role == "flatten":
        return role if _channels_last(op) else "block"
    return role


def output_channels(layer) -> int:
    """The number of output channels of a producer (the last axis of its main kernel)."""
    main = facts_for(layer).main_kernel
    if main is None:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no main kernel: it produces no channels")
    weights = {w.path.split("/")[-1]: w for w in layer.weights}
    return int((weights[main] if main in weights else getattr(layer, main)).shape[-1])


# ---- pruning: groups of producers joined through merges --------------------------------------------------------
def _name(node) -> str:
    op = node.operation
    return f"{getattr(op, 'name', op)!s} ({type(op).__name__})"


@dataclass
class ChannelGroup:
    """Producers whose output channels are pruned with one mask, the followers masked with them, and why the group
    cannot be pruned.

    Made by `channel_groups` (pruning's ``structure="channels"``).

    Attributes:
        producers: Names of the producer layers (Conv, Dense) joined through merges (an ``Add`` of their outputs);
            the first is the group's ``name``.
        followers: Names of the follower layers (BatchNorm, depthwise) whose per-channel weights go with the channels.
        reason: Why the group cannot be pruned (a model output, a layer channel pruning cannot follow ...); None when
            it can.
    """

    producers: list = field(default_factory=list)
    followers: list = field(default_factory=list)
    reason: str | None = None

    @property
    def name(self) -> str:
        return self.producers[0]


def _unite(info: GraphInfo, producer_of, start_node):
    """The group that ``start_node``'s producer belongs to, found by walking forward and back through merges."""
    group = ChannelGroup()
    todo, seen_producers, seen_nodes = [start_node], set(), set()

    def refuse(msg):
        if group.reason is None:
            group.reason = msg

    def backward(tensor, merge):
        node = producer_of.get(id(tensor))
        if node is None:
            return refuse(f"{_name(merge)} adds a model input to the channels; they cannot be pruned")
        k = channel_role(node.operation, node)
        if k == "producer":
            if id(node) not in seen_producers:
                todo.append(node)
        elif k in ("follower", "pass"):
            backward(node.input_tensors[0], merge)
        elif k == "merge":
            for t in node.input_tensors:
                backward(t, merge)
        else:
            refuse(
                f"{_name(merge)} joins these channels with the output of {_name(node)}, whose channels cannot "
                f"be pruned with them"
            )

    def forward(node, mixed):
        for t in node.outputs:
            if id(t) in info.output_ids:
                src = group.producers[0]
                via = "" if node.operation.name == src else f" (through {_name(node)})"
                refuse(f"the output channels of {src!r} are a model output{via}; they must stay")
        for consumer in info.node_consumers(node):
            k = channel_role(consumer.operation, consumer)
            if k != "pass" and info.calls(consumer.operation) > 1:
                refuse(
                    f"the channels of {group.producers[0]!r} reach {_name(consumer)}, which is called "
                    f"{info.calls(consumer.operation)} times: its weights serve every call"
                )
                continue
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
                refuse(
                    f"the channels of {group.producers[0]!r} reach {_name(consumer)}{after}, which channel "
                    f"pruning cannot follow"
                )

    while todo:
        node = todo.pop(0)
        if id(node) in seen_producers:
            continue
        seen_producers.add(id(node))
        group.producers.append(node.operation.name)
        if info.calls(node.operation) > 1:
            refuse(f"{_name(node)} is called {info.calls(node.operation)} times: its channels serve every call")
        forward(node, False)
    return group


def channel_groups(model, candidates=None) -> list:
    """Groups the producers of a model whose output channels must be pruned together.

    Producers whose channels meet in a merge (an ``Add``) form one group; the followers after them are masked with
    it. A group that cannot be pruned says why in ``reason``.

    Args:
        model: A Functional or Sequential model. Not changed.
        candidates: Names of the producers to report on (the groups holding them); None: every producer.

    Returns:
        A list of `ChannelGroup`, in graph order of their first producer.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
    """
    info = GraphInfo.of(model)
    producer_of = {id(t): node for node in info.nodes for t in node.outputs}
    groups, placed = [], set()
    for node in info.nodes:
        op = node.operation
        if not isinstance(op, keras.layers.Layer) or facts_for(op).channels != "produce" or op.name in placed:
            continue
        if candidates is not None and op.name not in candidates:
            continue
        if channel_role(op, node) != "producer":
            groups.append(ChannelGroup([op.name], [], producer_problem(op)))
            placed.add(op.name)
            continue
        group = _unite(info, producer_of, node)
        placed.update(group.producers)
        groups.append(group)
    return groups


# ---- compression: single producer → consumer chains -----------------------------------------------------------
@dataclass
class ChannelChain:
    """A consumer, its producer and the per-channel layers with weights between them: input channels of the consumer
    that can be removed with the producer's output channels.

    Made by `channel_chains`; ``keras_eff.compression`` calls it ``ChannelGroup``.

    Attributes:
        consumer: Name of the layer whose input channels go.
        producer: Name of the layer whose output channels go with them.
        channelwise: Names of the layers with per-channel weights between the two (BatchNorm, depthwise), in graph
            order.
        channels: The producer's number of output channels.
    """

    consumer: str
    producer: str
    channelwise: list = field(default_factory=list)
    channels: int = 0


def channel_chains(model, usable=None) -> list:
    """Finds the producer → consumer chains of a model whose channels can be removed (compression's channel pruning).

    A chain is a consumer (a producer whose input channels can go, called once, on one input) whose input comes from
    another producer through followers and pass layers only, each called once and read by nothing else (no second
    branch, residual ``Add``, ``Concatenate`` or model output). Constants are allowed (``constant_ok=True``): the
    chain's channels are removed, not zeroed.

    Args:
        model: A Functional or Sequential model. Not changed.
        usable: ``usable(layer, input_shape) -> bool``: a technique's own condition, asked of the consumer (with its
            input shape) and of the producer (``input_shape=None``); compression refits only Dense kernels on vectors
            and 2-D convolutions. None: every producer is usable.

    Returns:
        A list of `ChannelChain`, in graph order of their consumers.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
    """
    info = GraphInfo.of(model)
    producer_of = {id(t): node for node in info.nodes for t in node.outputs}
    usable = usable or (lambda layer, shape: True)

    def endpoint(node, consumer):
        layer = node.operation
        return (
            len(node.input_tensors) == 1
            and info.calls(layer) == 1
            and channel_role(layer, node, constant_ok=True) == "producer"
            and usable(layer, node.input_tensors[0].shape if consumer else None)
        )

    chains = []
    for node in info.nodes:
        if not endpoint(node, consumer=True):
            continue
        chain = _walk_back(info, producer_of, node, endpoint)
        if chain is not None:
            chains.append(chain)
    return chains


def _walk_back(info, producer_of, consumer_node, endpoint):
    tensor, reader, between = consumer_node.input_tensors[0], consumer_node, []
    while True:
        if id(tensor) in info.output_ids or info.consumers.get(id(tensor), []) != [reader]:
            return None
        node = producer_of.get(id(tensor))
        if (
            node is None
            or not isinstance(node.operation, keras.layers.Layer)
            or info.calls(node.operation) != 1
            or len(node.input_tensors) != 1
        ):
            return None
        layer = node.operation
        if endpoint(node, consumer=False):
            return ChannelChain(consumer_node.operation.name, layer.name, between[::-1], output_channels(layer))
        if channel_role(layer, node, constant_ok=True) not in ("follower", "pass"):
            return None
        if layer.weights:
            between.append(layer.name)
        tensor, reader = node.input_tensors[0], node


# ---- physical removal -------------------------------------------------------------------------------------------
def _slice(op, values: dict, in_keep, out_keep, follower: bool) -> dict:
    """A layer's weights without the dropped channels: a follower's vectors and depthwise kernel on its channel; a
    producer's kernel on its input (``in_keep``, axis −2) and output (``out_keep``, axis −1) channels and its bias."""
    out = {}
    for name, v in values.items():
        if v.ndim == 1:  # bias, γ, β, moving statistics: one entry per (output) channel
            keep = in_keep if follower else out_keep
            out[name] = v if keep is None else v[keep]
            continue
        if in_keep is not None:
            v = np.take(v, in_keep, axis=-2)
        if out_keep is not None and not (follower and kernel_layout(op, name) == "depthwise"):
            v = np.take(v, out_keep, axis=-1)
        out[name] = v
    return out


def _size_setting(op, n) -> dict:
    config = op.get_config()
    for key in ("units", "filters"):
        if key in config:
            return {key: n}
    raise ValueError(
        f"layer {op.name!r} ({type(op).__name__}) has pruned output channels but no 'units' or "
        f"'filters' setting to rebuild it with fewer"
    )


def remove_channels(model, keep: dict) -> keras.Model:
    """Copies a plain model without the output channels that ``keep`` drops, physically.

    With a producer's channels go the matching channels of its followers (BatchNorm, depthwise) and the matching
    inputs of the layers that read them, through pass layers (pooling, activations), merges (``Add``),
    ``Concatenate`` and ``Flatten``. ``keras_eff.strip(..., remove_pruned_channels=True)`` calls it.

    Args:
        model: A plain Functional or Sequential model (wrappers stripped). Not changed.
        keep: ``{producer layer name: indices of the output channels kept}``; producers not named keep all.

    Returns:
        A new Keras model with the smaller layers and the kept weights.

    Raises:
        ValueError: If removed channels reach a layer that cannot drop them, or a merge whose inputs keep different
            channels (prune such producers as one group, as ``prune_model`` does).
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        small = keras_eff.pruning.remove_channels(model, {"conv1": [0, 2, 5]})
        ```
    """
    keeps: dict[int, Any] = {}  # id(tensor of the old graph) -> kept channel indices (None: all)

    def transform(rb, node, args, kwargs):
        op = node.operation
        ins = [keeps.get(id(t)) for t in node.input_tensors]
        k = channel_role(op, node)
        out_keep, new = None, None
        if k == "producer":
            out_keep = keep.get(op.name)
            if out_keep is not None or ins[0] is not None:
                new = clone_layer(op, **({} if out_keep is None else _size_setting(op, len(out_keep))))
        elif k == "follower":
            out_keep = ins[0]
            if out_keep is not None:
                new = clone_layer(op)
        elif k == "pass" or k == "merge":
            out_keep = ins[0]
            if k == "merge" and any(
                (a is None) != (out_keep is None) or (a is not None and not np.array_equal(a, out_keep)) for a in ins
            ):
                raise ValueError(
                    f"layer {op.name!r} merges inputs whose kept channels differ; prune the layers "
                    f"before it as one group (prune_model does)"
                )
        elif k == "concat" and any(a is not None for a in ins):
            parts, offset = [], 0
            for a, t in zip(ins, node.input_tensors):
                c = t.shape[-1]
                parts.append(offset + (np.arange(c) if a is None else a))
                offset += c
            out_keep = np.concatenate(parts)
        elif k == "flatten" and ins[0] is not None:
            shape = node.input_tensors[0].shape[1:]
            positions = int(np.prod(shape[:-1]))
            out_keep = (np.arange(positions)[:, None] * shape[-1] + ins[0][None, :]).ravel()
        elif any(a is not None for a in ins):
            raise ValueError(
                f"pruned channels reach layer {getattr(op, 'name', op)!r} ({type(op).__name__}), which cannot drop them"
            )
        for t in node.outputs:
            keeps[id(t)] = out_keep
        if new is None:
            return None
        result = new(*args, **kwargs)
        values = {w.path.split("/")[-1]: np.asarray(w) for w in op.weights}
        sliced = _slice(op, values, ins[0], out_keep if k == "producer" else None, k == "follower")
        new.set_weights([sliced[w.path.split("/")[-1]] for w in new.weights])
        return result

    return rebuild(model, transform)


__all__ = [
    "ChannelChain",
    "ChannelGroup",
    "channel_chains",
    "channel_groups",
    "channel_role",
    "output_channels",
    "producer_problem",
    "remove_channels",
    "zero_preserving",
]
