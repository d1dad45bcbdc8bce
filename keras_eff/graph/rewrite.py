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
    """Returns the functional graph behind a Functional or Sequential model, the graph every rewrite walks.

    Args:
        model: A Keras model. A Sequential model must be built (given a ``keras.Input``, or called on data).

    Returns:
        ``model`` itself for a Functional model; for a Sequential one, the functional model Keras keeps inside it.
        Nothing is copied.

    Raises:
        UnsupportedModelError: If ``model`` is an unbuilt Sequential model or a subclassed model, whose graph cannot
            be rewritten (apply the per-layer functions ``keras_eff.quantize``/``prune``/``cluster`` to its layers).
        TypeError: If ``model`` is not a Keras model.
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UnsupportedModelError(
                f"Sequential model {model.name!r} is not built: give it a keras.Input first or call it on data"
            )
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and model.inputs:
        return model
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"model {model.name!r} is a subclassed Keras model, whose graph cannot be rewritten; apply the per-layer "
            f"decorators (keras_eff.quantize, keras_eff.prune, keras_eff.cluster) to its layers instead"
        )
    raise TypeError(f"expected a Keras 3 model, got {type(model).__name__}")


def holds_state(layer) -> bool:
    """Tells whether a layer holds any variable; a layer without one is computed from its inputs alone.

    Args:
        layer: A Keras layer or model.

    Returns:
        True if ``layer.variables`` is not empty: weights, non-trainable statistics, a seed generator's state
        (Keras lists all of them, sublayers' included); else False.
    """
    return bool(layer.variables)


def reuse_or_clone(layer):
    """Gives a layer to call in a rewritten model: the layer itself where it holds no state, else a copy.

    Args:
        layer: A Keras layer. Not changed.

    Returns:
        ``layer`` itself if it holds no variable (see `holds_state`): it will be called in both models, so set no
        attribute on it. Otherwise a new, unbuilt layer of the same class made from its config; the caller copies the
        weights (`copy_weights`) once it has been called.

    Raises:
        UnsupportedModelError: If the layer holds variables and its ``get_config``/``from_config`` round trip fails.
    """
    return clone_layer(layer) if holds_state(layer) else layer


def layers_with(model, method: str) -> list:
    """Finds the layers that define a given method: how a technique finds another's layers by their hooks.

    Nested models are searched; a layer found is not looked into.

    Args:
        model: A Keras model (or a layer holding sublayers); the model itself is not a candidate.
        method: The name of the method, for example ``"strip_layer"`` (pruning and clustering wrappers) or
            ``"unset_ranges"`` (quantization wrappers).

    Returns:
        A list of the layers whose ``method`` attribute is callable, in Keras's layer order.
    """
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
    """Refuses to prune or cluster a model that is already quantized or holds pruning or clustering wrappers.

    Args:
        model: The Keras model about to be rewritten. Not changed.
        verb: What the caller is about to do, for the message: ``"prune"`` or ``"cluster"``.
        keeps: The ``preserve=`` value of ``keras_eff.quantize_model`` that carries the technique through QAT
            (``"sparsity"``, ``"clusters"``), named in the message.
        hint: Words appended to the message that tells the user to strip the model first.

    Returns:
        None, when the model holds neither kind of layer.

    Raises:
        ValueError: If ``model`` holds quantization wrappers (layers with ``unset_ranges``) or keras-eff wrappers from
            ``prune_model``/``cluster_model`` (layers with ``strip_layer``); the message says what to do instead.
    """
    quantized = layers_with(model, "unset_ranges")
    if quantized:
        raise ValueError(
            f"model {model.name!r} is quantized (it holds {name_list(quantized)}): {verb} the float "
            f"model instead, then strip it and quantize the result with "
            f"keras_eff.quantize_model(stripped, preserve='{keeps}')"
        )
    wrapped = layers_with(model, "strip_layer")
    if wrapped:
        raise ValueError(
            f"model {model.name!r} holds keras-eff wrappers from an earlier prune_model or "
            f"cluster_model ({name_list(wrapped)}): call keras_eff.strip(model) first, then {verb} the "
            f"stripped model{hint}"
        )


def name_list(layers, limit: int = 4) -> str:
    """Names layers for a message.

    Args:
        layers: Layers (anything with a ``name``).
        limit: How many names to spell out.

    Returns:
        ``"a, b, c"``: the first ``limit`` names joined by commas, then ``" and N more"`` when there are more.
    """
    names = [layer.name for layer in layers]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# Layers whose class defines ``after_rebuild(model)`` (a classmethod) are told when a rewrite built a model holding
# them (quantization wrappers place their neighbours' ranges again).
AFTER_REBUILD = "after_rebuild"


def tensors_in(model, layer, which="input"):
    """Reads a layer's input or output tensor as it is in a given model's graph.

    A layer reused by a rewrite (one without state) is called in several graphs, and Keras's ``layer.input`` is its
    first call's: the tensor of the user's model, not of ``model``.

    Args:
        model: The Functional model whose graph to read.
        layer: A layer called in ``model``.
        which: ``"input"`` for the call's input tensors; anything else for its outputs.

    Returns:
        The tensor, or a list of tensors where the call has several. Where ``layer`` has no call in ``model``,
        ``layer.input`` or ``layer.output`` (its first call's).
    """
    for index, node in enumerate(layer._inbound_nodes):
        if f"{id(layer)}_ib-{index}" in model._nodes:  # Keras's node key (ops/function.py make_node_key)
            tensors = node.input_tensors if which == "input" else node.outputs
            return tensors[0] if len(tensors) == 1 else list(tensors)
    return layer.input if which == "input" else layer.output


def clone_layer(layer, **overrides):
    """Makes a new layer of the same class and config, with some settings changed.

    Args:
        layer: A Keras layer. Not changed.
        **overrides: Config entries to change in the copy (``name=``, ``units=``, ``use_bias=`` ...).

    Returns:
        A new, unbuilt layer built by ``type(layer).from_config`` from ``layer.get_config()`` updated with
        ``overrides``. Weights are not copied: use `copy_weights` once the new layer is built.

    Raises:
        UnsupportedModelError: If the ``get_config``/``from_config`` round trip fails; the message says to give the
            class a ``get_config()`` returning its constructor's arguments.
    """
    try:
        config = layer.get_config()
        config.update(overrides)
        return layer.__class__.from_config(config)
    except Exception as err:
        raise UnsupportedModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) holds variables, so the new model gets a copy made from "
            f"its config (get_config/from_config), and that failed: {type(err).__name__}: {err}. Give the class a "
            f"get_config() returning its constructor's arguments (layers without variables are reused as they "
            f"are and need none)"
        ) from err


def copy_weights(src, dst):
    """Copies the weights of one built layer into another of the same structure.

    Layers that derive state from their variables (an adapted ``Normalization``'s mean and variance) recompute it
    (``finalize_state``), as Keras does when it loads weights.

    Args:
        src: The built layer to copy from. Not changed.
        dst: A built layer with the same weights in the same order and shapes; changed in place.

    Returns:
        None. ``dst`` holds ``src``'s weight values.

    Raises:
        ValueError: If the number or the shapes of the weights differ (raised by Keras's ``set_weights``).
    """
    dst.set_weights(src.get_weights())
    finalize = getattr(dst, "finalize_state", None)
    if callable(finalize) and dst.weights:
        finalize()


@dataclass
class GraphInfo:
    """The nodes of a functional graph in execution order, and which nodes read each tensor.

    Build one with ``GraphInfo.of(model)``; `Rebuild` hands one to every transform as ``rb.info``.

    Attributes:
        model: The functional model (`functional_of` of the model given to ``of``).
        nodes: The graph's nodes in execution order, input nodes left out (nested models are single nodes).
        consumers: ``{id(tensor): [nodes reading it]}``.
        output_ids: The ``id`` of each of the model's output tensors.
    """

    model: keras.Model
    nodes: list = field(default_factory=list)
    consumers: dict = field(default_factory=dict)
    output_ids: set = field(default_factory=set)

    @classmethod
    def of(cls, model):
        """Reads the graph of a Functional or Sequential model.

        Args:
            model: A Functional or Sequential model. Not changed.

        Returns:
            A new `GraphInfo` of ``functional_of(model)``.

        Raises:
            UnsupportedModelError: If the model is subclassed or an unbuilt Sequential model.
        """
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
        """Counts the calls of an operation in this graph.

        Not ``len(op._inbound_nodes)``: that also counts the calls of other models sharing the layer (every rewrite
        reuses stateless layers).

        Args:
            op: A layer or Keras operation.

        Returns:
            How many nodes of this graph call ``op``.
        """
        return sum(1 for node in self.nodes if node.operation is op)

    def node_consumers(self, node) -> list:
        """Lists the nodes that read any output of ``node``.

        Args:
            node: A node of this graph.

        Returns:
            The consuming nodes, one entry per tensor read (a node reading two outputs appears twice).
        """
        return [c for t in node.outputs for c in self.consumers.get(id(t), [])]

    def sole_consumer(self, node):
        """Finds the one node that reads this node's single output.

        Args:
            node: A node of this graph.

        Returns:
            That node, or None where ``node`` has several outputs, several or no readers, or its output is a model
            output.
        """
        if len(node.outputs) != 1 or id(node.outputs[0]) in self.output_ids:
            return None
        consumers = self.consumers.get(id(node.outputs[0]), [])
        return consumers[0] if len(consumers) == 1 else None


class Rebuild:
    """One rebuild in progress, handed to the transform of `rebuild` as its first argument.

    Most callers use `rebuild`; a transform reads ``rb.info`` and may call ``rb.absorb(node)`` and ``rb.keep(...)``.

    Args:
        model: The Functional or Sequential model to rebuild. Not changed.
        transform: ``transform(rb, node, args, kwargs)``, called for each node in execution order; it returns the
            node's new outputs, or None to keep the node (see `keep`).
        on_input: A function mapping each new model input to the tensor its consumers read; None: the input itself.

    Attributes:
        info: The `GraphInfo` of ``model``.
        absorbed: The ``id`` of each node marked by `absorb`.
        tensors: ``{id(tensor of the old graph): tensor of the new graph}``, filled as the rebuild goes.
    """

    def __init__(self, model, transform, on_input=None):
        self.on_input = on_input
        self.info = GraphInfo.of(model)
        self.transform = transform
        self.absorbed = set()
        self.tensors = {}
        self.made = {}  # id(op of the old graph) -> the layer made for its first call (see ``call_shared``)

    def call_shared(self, op, args, kwargs, make):
        """Calls what was made for ``op``'s first call in this graph again at its later calls: a layer called several
        times (a shared Dense, an encoder model applied to two inputs) shares its weights between the calls, and
        the new model's layer must too. A transform makes its layer once: ``make(args, kwargs) -> (layer,
        outputs)`` runs at the first call only.

        Args:
            op: The operation of the old graph.
            args: The call's positional arguments, as tensors of the new graph.
            kwargs: The call's keyword arguments, as tensors of the new graph.
            make: Makes the new layer for ``op`` and calls it on ``args``/``kwargs``; returns both.

        Returns:
            The call's outputs in the new graph.
        """
        made = self.made.get(id(op))
        if made is not None:
            return made(*args, **kwargs)
        layer, outputs = make(args, kwargs)
        self.made[id(op)] = layer
        return outputs

    def absorb(self, node):
        """Marks ``node`` as fused into an earlier node: it will pass its first input through.

        Args:
            node: A later node of the graph being rebuilt (for example the BatchNorm after a folded convolution).

        Returns:
            None.
        """
        self.absorbed.add(id(node))

    def keep(self, node, args, kwargs):
        """Calls the node as it is in the new graph: the default for nodes the transform leaves alone.

        A layer that holds state is copied (config and weights); a stateless layer or op is called as it is, the same
        object in both models (nothing may be set on it); a nested model is rebuilt with the same transform. A layer
        or nested model called several times is copied once, and the copy called again (``call_shared``).

        Args:
            node: The node of the old graph.
            args: The call's positional arguments, as tensors of the new graph.
            kwargs: The call's keyword arguments, as tensors of the new graph.

        Returns:
            The node's outputs in the new graph.
        """
        op = node.operation
        if isinstance(op, keras.Model):
            return self.call_shared(op, args, kwargs, lambda a, k: _called(rebuild(op, self.transform), a, k))
        if isinstance(op, keras.layers.Layer) and holds_state(op):
            return self.call_shared(op, args, kwargs, lambda a, k: _copy_called(op, a, k))
        return op(*args, **kwargs)

    def _run_nodes(self):
        """Passes every node through the transform in order; returns the outputs, as tensors of the new graph."""
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
        return keras.tree.map_structure(lambda t: self.tensors[id(t)], self.info.model._outputs_struct)

    def inline(self, model, inputs):
        """Runs the nodes of another functional model through this rebuild's transform, on tensors of the new graph:
        its operations become part of the new model instead of a nested one (a traced ``Lambda``).

        Args:
            model: A functional model (of Keras ops, say).
            inputs: Tensors of the new graph, one per input of ``model``, in order.

        Returns:
            ``model``'s outputs in the new graph.
        """
        inner = Rebuild(model, self.transform)
        for old, new in zip(model.inputs, inputs):
            inner.tensors[id(old)] = new
        return inner._run_nodes()

    def run(self, name=None) -> keras.Model:
        """Builds the new model: walks the nodes in order, then tells classes with an ``after_rebuild`` hook.

        Args:
            name: The new model's name (default: the functional model's).

        Returns:
            A new ``keras.Model`` on fresh inputs.
        """
        fn = self.info.model
        new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=getattr(t, "name", None)) for t in fn.inputs]
        for old, new in zip(fn.inputs, new_inputs):
            self.tensors[id(old)] = new if self.on_input is None else self.on_input(new)
        outputs = self._run_nodes()
        inputs = keras.tree.pack_sequence_as(fn._inputs_struct, new_inputs)
        model = keras.Model(inputs, outputs, name=name or fn.name)
        hooks = {getattr(type(l), AFTER_REBUILD, None) for l in model._flatten_layers(include_self=False)}
        for hook in filter(None, hooks):  # once per class that asks
            hook(model)
        return model


def _called(layer, args, kwargs):
    return layer, layer(*args, **kwargs)


def _copy_called(op, args, kwargs):
    """A copy of a layer that holds state, called, with ``op``'s weights."""
    new = clone_layer(op)
    out = new(*args, **kwargs)
    if op.weights:
        copy_weights(op, new)
    return new, out


def rebuild(model, transform=None, name=None, on_input=None) -> keras.Model:
    """Makes a new model with the same graph, each node passed through ``transform``: how every technique rewrites a
    model.

    Layers that hold state are copied with their weights and stateless ones reused (see the module docstring), so the
    new model shares no variable with ``model``. Nested models are rebuilt with the same transform. A layer class with
    an ``after_rebuild(model)`` classmethod is called once with the new model.

    Args:
        model: A Functional or Sequential model. Not changed.
        transform: ``transform(rb, node, args, kwargs)``: ``rb`` is the `Rebuild` in progress, ``node`` the Keras
            node of the old graph and ``args``/``kwargs`` its call arguments as tensors of the new graph. It returns
            the node's new outputs (wrap, replace, fuse), or None to keep the node. Default: keep every node (a copy).
        name: The new model's name (default: ``model.name``).
        on_input: A function mapping each new model input to the tensor its consumers read; None: the input itself.

    Returns:
        A new ``keras.Model``.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model, or a layer that holds
            state cannot be copied from its config.
        TypeError: If ``model`` is not a Keras model.

    Example:
        ```python
        def relu6(rb, node, args, kwargs):
            if isinstance(node.operation, keras.layers.ReLU):
                return keras.layers.ReLU(max_value=6.0)(*args, **kwargs)
            return None  # keep the node

        capped = keras_eff.graph.rebuild(model, relu6)
        ```
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


def graph_node_ids(model) -> set:
    """The ``id`` of every node of a model's graph and of the graphs of the models nested in it.

    A layer reused by a rewrite is called in several models, and its ``_inbound_nodes``/``_outbound_nodes`` list the
    calls of all of them: keep those of one model with this set.

    Args:
        model: A Functional or Sequential model.

    Returns:
        A set of ``id(node)``.
    """
    return set(_graph_nodes(functional_of(model), {}))


def release(model) -> None:
    """Unhooks a model made by `rebuild` from the stateless layers it shares with the model it was made from.

    Keras records every call of a layer on the layer (``_inbound_nodes``, ``_outbound_nodes``), so a shared layer
    keeps each model built on it alive, variables and traced functions included, as long as the original model
    lives. Loops that build and discard many candidates (mixed precision, compression) call this on each one once
    it is scored. Only the trailing records are dropped (the others' positions index the graphs of models still in
    use).

    Args:
        model: A model made by `rebuild` (or `clone`, `fold_batchnorm`) and no longer needed. It must not be saved or
            rewritten afterwards.

    Returns:
        None. The shared layers forget ``model``'s calls; the model it was made from is not changed.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
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
    """Copies a model with some layers replaced or removed.

    Args:
        model: A Functional or Sequential model. Not changed.
        replace: ``{layer name: callable}``: each callable is called on that layer's call arguments instead of the
            layer and returns its outputs (a new layer, or any function of Keras tensors).
        remove: Names of single-input layers to drop: their output becomes their input.

    Returns:
        A new model made by `rebuild`; the other layers are copied with their weights (stateless ones reused).

    Raises:
        ValueError: If a name is not a layer of ``model`` (the message lists its layers), or a layer to remove has
            several inputs.

    Example:
        ```python
        no_dropout = keras_eff.graph.clone(model, remove=["dropout"])
        capped = keras_eff.graph.clone(model, replace={"relu": keras.layers.ReLU(max_value=6.0)})
        ```
    """
    replace, remove = dict(replace or {}), set(remove)
    known = {layer.name for layer in functional_of(model).layers}
    unknown = (set(replace) | remove) - known
    if unknown:
        raise ValueError(
            f"no layer named {', '.join(sorted(unknown))} in model {model.name!r}; its layers are: "
            f"{', '.join(sorted(known))}"
        )

    def transform(rb, node, args, kwargs):
        name = getattr(node.operation, "name", None)
        if name in remove:
            if len(node.input_tensors) != 1:
                raise ValueError(
                    f"layer {name!r} has {len(node.input_tensors)} inputs; only single-input layers can be removed"
                )
            return args[0]
        if name in replace:
            return replace[name](*args, **kwargs)
        return None

    return rebuild(model, transform)
