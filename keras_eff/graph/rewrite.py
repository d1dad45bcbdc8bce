"""Rebuilding Keras functional graphs node by node: the mechanism every technique uses to change a model.

``rebuild(model, transform)`` walks the graph of a Functional or Sequential model in order and builds a new model on
fresh inputs. For each node the ``transform`` may return new outputs (wrap, replace, fuse) or ``None`` to keep the
node as it is: a layer that holds state (weights, BatchNorm statistics, a seed generator's state: any variable) is
copied, so the new model shares no variable with the old one and the user's model is never changed; a stateless
layer (Flatten, Add, a ``Lambda``, ...) is reused as it is, the same object called in both models, as Keras allows.
Reusing needs no ``get_config``/``from_config`` round trip, which Keras refuses for a ``Lambda`` outside unsafe mode
and which custom layers may not implement. Nodes a transform has fused into an earlier one are marked ``absorbed`` and
pass their input through.

A shared layer carries one Keras node per model it is called in: ``layer.input``/``layer.output`` give its first
call's tensors (in the original model), and ``len(layer._inbound_nodes)`` counts the other models' calls too. Read a
reused layer's tensors from the new graph (``GraphInfo``; ``GraphInfo.calls`` counts one graph's calls), and
``release`` a discarded model so that the shared layers do not keep it alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from ..errors import UnsupportedModelError


def functional_of(model) -> keras.Model:
    """The functional graph behind a Functional or Sequential model; a clear error for anything else."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} is not built: give it a keras.Input first or call it on data")
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and model.inputs:
        return model
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"model {model.name!r} is a subclassed Keras model, whose graph cannot be rewritten; apply the per-layer "
            f"decorators (keras_eff.quantize, keras_eff.prune, keras_eff.cluster) to its layers instead")
    raise TypeError(f"expected a Keras 3 model, got {type(model).__name__}")


def holds_state(layer) -> bool:
    """Whether a layer holds any variable: weights, non-trainable statistics, a seed generator's state (Keras lists
    all of them in ``layer.variables``, sublayers included). A layer without is computed from its inputs alone."""
    return bool(layer.variables)


def reuse_or_clone(layer):
    """``layer`` itself where it holds no state (see ``holds_state``), else a new copy from its config (unbuilt:
    the caller copies the weights once it is called). A reused layer must not be changed: set no attribute on it."""
    return clone_layer(layer) if holds_state(layer) else layer


def layers_with(model, method: str) -> list:
    """The layers of ``model`` that define a callable ``method`` (nested models searched; a layer found is not looked
    into): how a technique finds another's layers by their duck-typed hooks (``strip_layer``, ``unset_ranges``)."""
    found = []

    def walk(layer):
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            if callable(getattr(sub, method, None)):
                found.append(sub)
            else:
                walk(sub)

    walk(model)
    return found


def refuse_rewritten(model, verb: str, keeps: str, hint: str = "") -> None:
    """Refuses to ``verb`` (``"prune"``, ``"cluster"``) a model that is already quantized or holds pruning or
    clustering wrappers, saying what to do instead; ``keeps`` is the ``preserve=`` value that carries the technique
    through QAT, ``hint`` a last word on the stripped model."""
    quantized = layers_with(model, "unset_ranges")
    if quantized:
        raise ValueError(f"model {model.name!r} is quantized (it holds {name_list(quantized)}): {verb} the float "
                         f"model instead, then strip it and quantize the result with "
                         f"keras_eff.quantize_model(stripped, preserve='{keeps}')")
    wrapped = layers_with(model, "strip_layer")
    if wrapped:
        raise ValueError(f"model {model.name!r} holds keras-eff wrappers from an earlier prune_model or "
                         f"cluster_model ({name_list(wrapped)}): call keras_eff.strip(model) first, then {verb} the "
                         f"stripped model{hint}")


def name_list(layers, limit: int = 4) -> str:
    """'a, b, c' for the layers' names, the first ``limit`` of them and how many more."""
    names = [layer.name for layer in layers]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# Layers whose class defines ``after_rebuild(model)`` (a classmethod) are told when a rewrite built a model holding
# them (quantization wrappers place their neighbours' ranges again).
AFTER_REBUILD = "after_rebuild"


def tensors_in(model, layer, which="input"):
    """``layer.input`` / ``layer.output`` as they are in ``model``'s graph. A layer reused by a rewrite (one without
    state) is called in several graphs, and Keras's ``layer.input`` is its first call's: the user's model's tensor."""
    for index, node in enumerate(layer._inbound_nodes):
        if f"{id(layer)}_ib-{index}" in model._nodes:  # Keras's node key (ops/function.py make_node_key)
            tensors = node.input_tensors if which == "input" else node.outputs
            return tensors[0] if len(tensors) == 1 else list(tensors)
    return layer.input if which == "input" else layer.output


def clone_layer(layer, **overrides):
    """A new layer of the same class and config (with ``overrides``); weights are copied by ``copy_weights``."""
    try:
        config = layer.get_config()
        config.update(overrides)
        return layer.__class__.from_config(config)
    except Exception as err:
        raise UnsupportedModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) holds variables, so the new model gets a copy made from "
            f"its config (get_config/from_config), and that failed: {type(err).__name__}: {err}. Give the class a "
            f"get_config() returning its constructor's arguments (layers without variables are reused as they "
            f"are and need none)") from err


def copy_weights(src, dst):
    """Copies weights between two built layers of the same structure. Layers that derive state from their variables
    (an adapted ``Normalization``'s mean and variance) recompute it, as Keras does when it loads weights."""
    dst.set_weights(src.get_weights())
    finalize = getattr(dst, "finalize_state", None)
    if callable(finalize) and dst.weights:
        finalize()


@dataclass
class GraphInfo:
    """The nodes of a functional graph in execution order, and who consumes each tensor."""

    model: keras.Model
    nodes: list = field(default_factory=list)
    consumers: dict = field(default_factory=dict)
    output_ids: set = field(default_factory=set)

    @classmethod
    def of(cls, model):
        fn = functional_of(model)
        info = cls(fn)
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                info.nodes.append(node)
                for t in node.input_tensors:
                    info.consumers.setdefault(id(t), []).append(node)
        info.output_ids = {id(t) for t in fn.outputs}
        return info

    def calls(self, op) -> int:
        """How many nodes of this graph call ``op``. Not ``len(op._inbound_nodes)``: that also counts the calls of
        other models sharing the layer (every rewrite reuses stateless layers)."""
        return sum(1 for node in self.nodes if node.operation is op)

    def node_consumers(self, node) -> list:
        return [c for t in node.outputs for c in self.consumers.get(id(t), [])]

    def sole_consumer(self, node):
        """The one node that reads this node's single output, or None (several, none, or a model output)."""
        if len(node.outputs) != 1 or id(node.outputs[0]) in self.output_ids:
            return None
        consumers = self.consumers.get(id(node.outputs[0]), [])
        return consumers[0] if len(consumers) == 1 else None


class Rebuild:
    """State of one rebuild, handed to the transform: graph info, absorbed nodes, tensors built so far."""

    def __init__(self, model, transform, on_input=None):
        self.on_input = on_input
        self.info = GraphInfo.of(model)
        self.transform = transform
        self.absorbed = set()
        self.tensors = {}

    def absorb(self, node):
        """Marks ``node`` as fused into an earlier one: it will pass its (first) input through."""
        self.absorbed.add(id(node))

    def keep(self, node, args, kwargs):
        """The default: call a copy of the node's layer where it holds state; a stateless layer or op is called as it
        is (the same object in both models: nothing may be set on it)."""
        op = node.operation
        if isinstance(op, keras.Model):
            return rebuild(op, self.transform)(*args, **kwargs)
        if isinstance(op, keras.layers.Layer) and holds_state(op):
            new = clone_layer(op)
            out = new(*args, **kwargs)
            if op.weights:
                copy_weights(op, new)
            return out
        return op(*args, **kwargs)

    def run(self, name=None) -> keras.Model:
        fn = self.info.model
        new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=getattr(t, "name", None))
                      for t in fn.inputs]
        for old, new in zip(fn.inputs, new_inputs):
            self.tensors[id(old)] = new if self.on_input is None else self.on_input(new)
        for node in self.info.nodes:
            args, kwargs = node.arguments.fill_in(self.tensors)
            if id(node) in self.absorbed:
                outputs = args[0]
            else:
                outputs = self.transform(self, node, args, kwargs)
                if outputs is None:
                    outputs = self.keep(node, args, kwargs)
            for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
                self.tensors[id(old)] = new
        outputs = keras.tree.map_structure(lambda t: self.tensors[id(t)], fn._outputs_struct)
        inputs = keras.tree.pack_sequence_as(fn._inputs_struct, new_inputs)
        model = keras.Model(inputs, outputs, name=name or fn.name)
        hooks = {getattr(type(l), AFTER_REBUILD, None) for l in model._flatten_layers(include_self=False)}
        for hook in hooks - {None}:  # once per class that asks
            hook(model)
        return model


def rebuild(model, transform=None, name=None, on_input=None) -> keras.Model:
    """A new model with the same graph, each node passed through ``transform(rebuild, node, args, kwargs)``.

    The transform returns the node's new outputs, or None to keep the node (a copy of its layer where it holds
    state, else the layer itself). Nested models are
    rebuilt with the same transform. ``on_input`` maps each new model input to the tensor its consumers read.
    """
    return Rebuild(model, transform or (lambda *_: None), on_input).run(name=name or model.name)


def _graph_nodes(fn, out: dict) -> dict:
    """{id(node): node} for every node of a functional graph and of the models nested in it; and its operations."""
    for depth_nodes in fn._nodes_by_depth.values():
        for node in depth_nodes:
            out[id(node)] = node
            if isinstance(node.operation, keras.Model) and hasattr(node.operation, "_nodes_by_depth"):
                _graph_nodes(node.operation, out)
    return out


def release(model) -> None:
    """Unhooks a model made by ``rebuild`` from the stateless layers it shares with the model it was made from.

    Keras records every call of a layer on the layer (``_inbound_nodes``, ``_outbound_nodes``), so a shared layer
    keeps each model built on it alive, variables and traced functions included, as long as the original model
    lives. Loops that build and discard many candidates (mixed precision, compression) call this on each one once
    it is scored. Only the trailing records are dropped (the others' positions index the graphs of models still in
    use), and the released model must not be saved or rewritten afterwards.
    """
    nodes = _graph_nodes(functional_of(model), {})
    ops = {id(n.operation): n.operation for n in nodes.values() if n.operation is not None}
    for op in ops.values():
        inbound = getattr(op, "_inbound_nodes", None)
        if inbound is None or all(id(n) in nodes for n in inbound):
            continue  # the model's own layer: it goes with the model
        while inbound and id(inbound[-1]) in nodes:
            inbound.pop()
        op._outbound_nodes[:] = [n for n in op._outbound_nodes if id(n) not in nodes]


def clone(model, replace: dict | None = None, remove=()) -> keras.Model:
    """A copy of ``model`` with layers replaced (``{name: callable}``, each called on the layer's inputs) or removed
    (single-input layers whose output becomes their input). Unknown names raise, listing the model's layers."""
    replace, remove = dict(replace or {}), set(remove)
    known = {layer.name for layer in functional_of(model).layers}
    unknown = (set(replace) | remove) - known
    if unknown:
        raise ValueError(f"no layer named {', '.join(sorted(unknown))} in model {model.name!r}; its layers are: "
                         f"{', '.join(sorted(known))}")

    def transform(rb, node, args, kwargs):
        name = getattr(node.operation, "name", None)
        if name in remove:
            if len(node.input_tensors) != 1:
                raise ValueError(f"layer {name!r} has {len(node.input_tensors)} inputs; only single-input layers "
                                 f"can be removed")
            return args[0]
        if name in replace:
            return replace[name](*args, **kwargs)
        return None

    return rebuild(model, transform)
