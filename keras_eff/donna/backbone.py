"""The reference is any Keras model: its stem, its head and the block boundaries between them.

A *block boundary* is a layer whose output is the only thing the rest of the graph reads (a single-tensor cut: no
skip connection crosses it) and is an image tensor ``(h, w, c)``. The user names the boundaries (``blocks=[...]``,
layer names), or :func:`propose_boundaries` picks them where the network changes stage: the narrow tensors of an
inverted-bottleneck network (the last ``*_add``/``*_project_BN`` of each stage of MobileNetV2 or EfficientNet), else
the last tensor of each shape of a plain CNN.

The first boundary ends the *stem* (the reference's own layers from the input), the last one starts the *head* (its
layers up to the logits). Stem and head are kept as Keras configs inside the search space and built as two nested
models, ``stem`` and ``head``, of every architecture; their weights come from the reference as they are (it is not
retrained). A softmax at the end of the reference is dropped (DONNA distils and trains on logits); its weights are
untouched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import keras

MAX_LISTED = 60


@dataclass(frozen=True)
class Boundary:
    """A candidate block boundary: the layer's ``name``, its output ``shape`` (h, w, c) and topological ``position``."""

    name: str
    shape: tuple
    position: int

    def __str__(self):
        return f"{self.name} {'x'.join(map(str, self.shape))}"


def functional(model, what: str = "reference") -> keras.Model:
    """``model`` as a Functional model with one image input and one output; refuses what DONNA cannot split."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what}: expected a Keras model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"{what}: the Sequential model {model.name!r} has no input shape yet; start it with "
                f"keras.Input(shape) so that its graph is known"
            )
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_nodes_by_depth") or type(model).__name__ not in ("Functional", "Model"):
        raise ValueError(
            f"{what}: {model.name!r} is a subclassed model ({type(model).__name__}); DONNA reads the "
            f"layer graph, which only Functional and Sequential models have: rebuild it with the "
            f"Functional API"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{what}: {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            f"DONNA needs one image input and one output of class scores"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(s is None for s in shape):
        raise ValueError(
            f"{what}: {model.name!r} takes inputs of shape {shape}; DONNA needs a fixed image shape "
            f"(height, width, channels): build it with keras.Input((h, w, c))"
        )
    out = tuple(model.outputs[0].shape[1:])
    if len(out) != 1 or out[0] is None:
        raise ValueError(f"{what}: {model.name!r} outputs shape {out}; DONNA needs class scores (num_classes,)")
    return model


def _nodes(model) -> list:
    """The model's call nodes (input layers excluded) in topological order."""
    by_depth = model._nodes_by_depth
    return [n for d in sorted(by_depth, reverse=True) for n in by_depth[d] if not n.is_input]


def _layer_of(node):
    return node.operation


def candidate_boundaries(model) -> list:
    """Every layer of ``model`` whose output can be a block boundary (see the module doc), in graph order."""
    model = functional(model)
    nodes = _nodes(model)
    last_use = {}
    for p, node in enumerate(nodes, start=1):
        for t in node.input_tensors:
            last_use[id(t)] = p
    calls: dict[str, int] = {}
    for node in nodes:
        calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
    out, produced = [], [id(model.inputs[0])]
    running = last_use.get(id(model.inputs[0]), 0)
    for p, node in enumerate(nodes, start=1):
        # running: the last position reading any tensor made before this node's output
        outs = node.outputs
        if len(outs) == 1 and running <= p and calls[node.operation.name] == 1:
            shape = tuple(outs[0].shape[1:])
            if len(shape) == 3 and all(isinstance(s, int) for s in shape):
                out.append(Boundary(node.operation.name, shape, p))
        for t in outs:
            produced.append(id(t))
            running = max(running, last_use.get(id(t), 0))
    return out


def propose_boundaries(model) -> list:
    """Block boundaries keras-eff proposes: the last layer of each narrow stage (fewer channels than the tensors
    before and after it: the block outputs of an inverted-bottleneck network); for a network without such stages
    (channels only grow, a plain CNN), the last layer of each output shape."""
    cands = candidate_boundaries(model)
    runs: list[list] = []  # consecutive candidates of the same shape
    for b in cands:
        if runs and runs[-1][-1].shape == b.shape:
            runs[-1].append(b)
        else:
            runs.append([b])
    narrow = []
    for i, run in enumerate(runs):
        c = run[0].shape[2]
        prev_ok = i > 0 and runs[i - 1][0].shape[2] > c
        next_ok = i == len(runs) - 1 or runs[i + 1][0].shape[2] >= c
        if prev_ok and next_ok:
            narrow.append(run[-1])
    chosen = narrow if len(narrow) >= 2 else [run[-1] for run in runs]
    return [b.name for b in chosen]


def _listing(cands) -> str:
    names = [str(b) for b in cands]
    more = f" ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _nested_owner(model, name):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = [sub.name for sub in layer._flatten_layers(include_self=False)]
            if name in inner:
                return layer.name
    return None


def resolve_boundaries(model, blocks=None) -> list:
    """The boundaries of ``model`` as :class:`Boundary` objects: the layer names ``blocks`` (checked: in the model,
    single-tensor cuts, in graph order, shapes chaining with stride 1 or 2), or the proposed ones when None/"auto"."""
    model = functional(model)
    cands = candidate_boundaries(model)
    by_name = {b.name: b for b in cands}
    if blocks is None or blocks == "auto":
        blocks = propose_boundaries(model)
        if len(blocks) < 2:
            raise ValueError(
                f"reference {model.name!r}: found fewer than two block boundaries to propose; name them "
                f"(blocks=[...]) from the candidates: {_listing(cands)}"
            )
    if isinstance(blocks, str):
        blocks = [b.strip() for b in blocks.split(",") if b.strip()]
    if not isinstance(blocks, (list, tuple)) or not all(isinstance(b, str) for b in blocks):
        raise ValueError(f"reference.blocks: {blocks!r} must be a list of layer names (or 'auto')")
    if len(blocks) < 2:
        raise ValueError(
            f"reference.blocks: {list(blocks)} names {len(blocks)} boundary; give at least two (the "
            f"stem's output, then each block's output). Candidates: {_listing(cands)}"
        )
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"reference.blocks: {list(blocks)} names a layer twice")
    names = {layer.name for layer in model.layers}
    out = []
    for name in blocks:
        if name not in by_name:
            if name not in names:
                owner = _nested_owner(model, name)
                if owner is not None:
                    raise ValueError(
                        f"reference.blocks: layer {name!r} is inside the nested model {owner!r}; a "
                        f"boundary must be a layer of the top-level model (name {owner!r} itself, or "
                        f"rebuild the model flat). Candidates: {_listing(cands)}"
                    )
                raise ValueError(
                    f"reference.blocks: the model {model.name!r} has no layer {name!r}. Candidate "
                    f"boundaries (layer, output shape): {_listing(cands)}"
                )
            layer = model.get_layer(name)
            shape = tuple(layer.output.shape[1:]) if len(layer._inbound_nodes) == 1 else None
            why = (
                "its output is not an image tensor (h, w, c)"
                if shape is not None and len(shape) != 3
                else "it is called more than once (a shared layer)"
                if shape is None
                else "a skip connection (or another branch) crosses it: the layers after it also read an earlier "
                "tensor, so it is not a single-tensor boundary"
            )
            raise ValueError(
                f"reference.blocks: layer {name!r} cannot be a block boundary: {why}. Candidates: {_listing(cands)}"
            )
        out.append(by_name[name])
    for a, b in zip(out, out[1:]):
        if b.position <= a.position:
            raise ValueError(
                f"reference.blocks: {b.name!r} comes before {a.name!r} in the model; list the "
                f"boundaries from input to output"
            )
        stride = a.shape[0] / b.shape[0]
        s = int(round(stride)) if stride >= 1 else 0
        ok = s in (1, 2) and all(math.ceil(x / s) == y for x, y in zip(a.shape[:2], b.shape[:2]))
        if not ok:
            raise ValueError(
                f"reference.blocks: the block from {a.name!r} ({'x'.join(map(str, a.shape))}) to "
                f"{b.name!r} ({'x'.join(map(str, b.shape))}) does not map its input to its output with "
                f"stride 1 or 2 ('same' padding): the blocks' shapes do not chain. Choose boundaries "
                f"one stride apart from the candidates: {_listing(cands)}"
            )
    return out


def logits_model(model) -> tuple:
    """A copy of ``model`` (new layers, the same weights) that outputs logits: a final softmax (a ``Dense``/
    ``Conv2D`` activation or a ``Softmax``/``Activation`` layer) is dropped. Returns ``(copy, softmax_dropped)``."""
    model = functional(model)
    last = model.outputs[0]._keras_history[0]
    dropped = {"done": False}

    def clone(layer):
        cfg = layer.get_config()
        if layer is last and cfg.get("activation") == "softmax" and not isinstance(layer, keras.layers.Activation):
            cfg = {**cfg, "activation": "linear"}
            dropped["done"] = True
        return layer.__class__.from_config(cfg)

    def call(layer, *args, **kwargs):
        if layer.name == last.name and (
            isinstance(layer, keras.layers.Softmax)
            or (isinstance(layer, keras.layers.Activation) and layer.get_config().get("activation") == "softmax")
        ):
            dropped["done"] = True
            return args[0]
        return layer(*args, **kwargs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    copy.set_weights(model.get_weights())
    return copy, dropped["done"]


def _replay(nodes, tensor_map) -> None:
    """Calls fresh copies of the nodes' layers (same configs and names) on the tensors of ``tensor_map``."""
    for node in nodes:
        op = node.operation
        new = op.__class__.from_config(op.get_config()) if isinstance(op, keras.layers.Layer) else op
        args, kwargs = node.arguments.fill_in(tensor_map)
        outputs = keras.tree.flatten(new(*args, **kwargs))
        for orig, t in zip(node.outputs, outputs):
            tensor_map[id(orig)] = t


def stem_and_head(model, boundaries) -> tuple:
    """The stem (input → first boundary) and head (last boundary → output) of the Functional ``model`` as two
    standalone models named ``stem`` and ``head``, with ``model``'s weights."""
    nodes = _nodes(model)
    first, last = boundaries[0], boundaries[-1]
    stem = keras.Model(model.inputs, model.get_layer(first.name).output, name="stem")  # shares model's layers
    head_in = keras.Input(last.shape, name="head_input")
    tensor_map = {id(nodes[last.position - 1].outputs[0]): head_in}
    head_nodes = nodes[last.position :]
    _replay(head_nodes, tensor_map)
    head = keras.Model(head_in, tensor_map[id(model.outputs[0])], name="head")
    for node in head_nodes:
        op = node.operation
        if isinstance(op, keras.layers.Layer) and op.weights:
            head.get_layer(op.name).set_weights(op.get_weights())
    return stem, head


def backbone_config(model, blocks=None) -> tuple:
    """What a search space keeps of the reference ``model``: ``(backbone dict, logits model)`` where the dict holds
    the boundary names and shapes and the stem and head configs."""
    ref, dropped = logits_model(model)
    bounds = resolve_boundaries(ref, blocks)
    stem, head = stem_and_head(ref, bounds)
    return (
        {
            "boundaries": [b.name for b in bounds],
            "shapes": [list(b.shape) for b in bounds],
            "stem": keras.saving.serialize_keras_object(stem),
            "head": keras.saving.serialize_keras_object(head),
            "softmax_dropped": dropped,
            "source": model.name,
            "input_shape": list(ref.inputs[0].shape[1:]),
            "num_classes": int(ref.outputs[0].shape[-1]),
        },
        ref,
    )


def build_part(config: dict, name: str) -> keras.Model:
    """A fresh ``stem`` or ``head`` model from its stored config."""
    part = keras.saving.deserialize_keras_object(copy.deepcopy(config))  # Keras consumes the dict it reads
    if not isinstance(part, keras.Model):
        raise ValueError(f"the stored {name} is not a Keras model")
    return part


def reference_parts(reference, backbone: dict) -> dict:
    """``{"stem": [arrays], "head": [arrays]}``: the weights of the reference's stem and head."""
    ref = functional(reference)
    bounds = resolve_boundaries(ref, backbone["boundaries"])
    stem, head = stem_and_head(ref, bounds)
    return {"stem": stem.get_weights(), "head": head.get_weights()}
