"""A layer with no quantized implementation (a ``Lambda``, a user's custom layer) traced into the Keras layers and ops
it calls.

The converter sees such a layer as the ops it is made of and quantizes each one where TFLite has an int8 kernel; traced
on symbolic inputs here, its ops and sublayers become nodes of the quantized model (``quantize_model`` inlines them,
the sublayers copied and named after the layer), each on the grid the file gives it.

A layer's variables take part as symbolic inputs of the trace. What they compute on their own (``self.gamma``,
``ops.sigmoid(self.gate)``, ``ops.exp(self.log_scale)``) the converter folds into a constant; where such a constant
is an operand of ADD, SUB, MUL or a division of a tensor, a bound of MAXIMUM or MINIMUM (``ops.maximum(x,
self.floor)``), or a variable the kernel of a matmul, the trace hands it over as a `ConstantOperand` (the variables and
the ops on them), which ``quantize_model`` turns into a trainable weight of a `QuantizedConstantOp`, a
`ClipOnInputGrid` or a Dense kernel. Any other use of a variable leaves the layer float.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import keras
import numpy as np
from keras import layers, ops

from ..errors import UnsupportedModelError
from ..graph import clone_layer, copy_weights, rebuild

OPERAND_OPS = ("Add", "Subtract", "Multiply", "TrueDivide")  # a constant operand: QuantizedConstantOp
BOUND_OPS = ("Maximum", "Minimum")  # a bound: ClipOnInputGrid


class ConstantOperand:
    """What a traced layer's variables compute for one operand of an op on a tensor.

    Attributes:
        variables: The layer's variables it reads (the user's own: copy their values, never change them).
        function: A functional model of the Keras ops from ``variables`` to the operand (its inputs in
            ``variables`` order), or None where the operand is the one variable itself.
    """

    def __init__(self, variables, function=None):
        self.variables, self.function = list(variables), function

    @property
    def trainable(self) -> bool:
        return any(v.trainable for v in self.variables)

    def values(self) -> list:
        """Copies of the variables' values (float32 arrays)."""
        return [np.asarray(v, np.float32) for v in self.variables]

    def value(self) -> np.ndarray:
        """The operand's value now, in float32."""
        values = self.values()
        if self.function is None:
            return values[0]
        return np.asarray(self.function(values if len(values) > 1 else values[0]), np.float32)


def reciprocal(operand: ConstantOperand) -> ConstantOperand:
    """``1 / operand``, computed in float32 as the converter folds a division by a constant into a MUL."""
    if operand.function is None:
        (variable,) = operand.variables
        inputs = [keras.Input(batch_shape=variable.shape, dtype="float32")]
        out = inputs[0]
    else:
        inputs, out = list(operand.function.inputs), operand.function.outputs[0]
    return ConstantOperand(
        operand.variables, keras.Model(inputs if len(inputs) > 1 else inputs[0], ops.divide(1.0, out))
    )


class Traced(NamedTuple):
    """A traced layer: ``model`` takes the layer's inputs, then one tensor per entry of ``operands``."""

    model: keras.Model
    operands: list


def matmul_kernel(op, args, kwargs):
    """The `ConstantOperand` of ``ops.matmul(x, w)`` where ``w`` is a traced layer's 2-D variable itself; else None."""
    if type(op).__name__ != "Matmul" or kwargs or len(args) != 2:
        return None
    x, w = args
    if not isinstance(x, keras.KerasTensor) or not isinstance(w, ConstantOperand) or w.function is not None:
        return None
    (variable,) = w.variables
    return w if len(variable.shape) == 2 and len(x.shape) >= 2 and x.shape[-1] == variable.shape[0] else None


def trace_layer(op, args, kwargs) -> Traced | None:
    """The Keras ops a ``Lambda`` or a custom layer computes, traced on symbolic inputs; None where that cannot be
    done: a mask passed to it, a ``training`` argument that changes what it computes, TensorFlow calls that refuse
    symbolic tensors, an output that is not computed, or a variable used otherwise than ``ConstantOperand`` says.

    Args:
        op: The layer.
        args: Its call's positional arguments in the graph (one, a tensor or a structure of tensors).
        kwargs: Its call's keyword arguments (None values only).

    Returns:
        A `Traced`, or None.
    """
    if len(args) != 1 or any(v is not None for v in kwargs.values()) or isinstance(op, keras.Model):
        return None
    if isinstance(op, layers.Lambda):
        if op.variables:
            return None
        function, arguments = op.function, dict(op.arguments or {})
    elif type(op).__module__.startswith("keras."):
        return None  # a Keras layer with no quantized implementation: its call may not be plain ops
    else:
        function, arguments = op.call, {}
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    if "mask" in params:  # no mask reaches the layer here (checked above): called with none
        arguments = {**arguments, "mask": None}
    if "training" in params:
        # traced both ways, used only where the layer's own code computes the same (no noise of its own); the
        # ``training`` it hands its sublayers (a BatchNormalization, a Dropout) is Keras's at run time: traced with None
        inference = _trace(op, function, {**arguments, "training": False}, args[0])
        learning = _trace(op, function, {**arguments, "training": True}, args[0])
        if inference is None or learning is None or not _same_graph(inference.model, learning.model):
            return None
        arguments = {**arguments, "training": None}
    traced = _trace(op, function, arguments, args[0])
    return None if traced is None else _own_sublayers(traced, op.name)


def _trace(layer, function, arguments, structure) -> Traced | None:
    """``function`` called on symbolic inputs shaped as ``structure``, the variables ``layer`` holds as attributes
    standing in as symbolic inputs meanwhile (set past Keras's attribute tracking, so that its weights lists are not
    touched, and put back after)."""
    symbolic = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype) if isinstance(t, keras.KerasTensor) else t,
        structure,
    )
    inputs = [t for t in keras.tree.flatten(symbolic) if isinstance(t, keras.KerasTensor)]
    if not inputs or len(inputs) != len(keras.tree.flatten(symbolic)):
        return None
    held = {k: v for k, v in vars(layer).items() if isinstance(v, keras.Variable)}
    stand_ins = {k: keras.Input(batch_shape=v.shape, dtype=v.dtype) for k, v in held.items()}
    try:
        for k, t in stand_ins.items():
            object.__setattr__(layer, k, t)
        outputs = function(symbolic, **arguments)
    except Exception:  # noqa: BLE001 (TensorFlow calls, Python control flow on tensors: left float as it is)
        return None
    finally:
        for k, v in held.items():
            object.__setattr__(layer, k, v)
    flat = keras.tree.flatten(outputs)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        return None
    if any(t is i for t in flat for i in inputs):  # an output that is an input: nothing computed
        return None
    try:
        if not held:
            model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=layer.name)
            return Traced(model, []) if _sublayers_cover(model, layer, held) else None
        model = keras.Model(inputs + list(stand_ins.values()), outputs, name=layer.name)
    except Exception:  # noqa: BLE001 (an output that does not depend on the inputs, say)
        return None
    if not _sublayers_cover(model, layer, held):
        return None
    return _constant_operands(model, inputs, {id(stand_ins[k]): v for k, v in held.items()}, outputs)


def _constant_operands(model, inputs, variables, outputs) -> Traced | None:
    """``model`` (inputs: the layer's, then its variables' stand-ins) as a `Traced` whose extra inputs are the
    operands the variables compute, or None where a variable or what it computes is used otherwise."""
    constant = set(variables)  # ids of tensors computed from the variables alone
    operands: dict = {}  # id of an operand tensor -> the tensor
    reads: dict = {}  # id of an operand tensor -> how many times an op reads it
    for node in _nodes(model):
        ins = node.arguments.keras_tensors
        if not ins or type(node.operation).__name__ == "InputLayer":
            continue
        if all(id(t) in constant for t in ins):
            if getattr(node.operation, "variables", None):
                return None  # a sublayer on the variables (its weights would hide in a constant's function)
            constant.update(id(t) for t in node.output_tensors)
            continue
        for t in ins:
            if id(t) in constant:
                if not _operand_use(node, t, id(t) in variables):
                    return None
                operands[id(t)] = t
                reads[id(t)] = reads.get(id(t), 0) + 1
    if any(n > 1 for n in reads.values()):
        return None  # an operand read twice: two trainable copies would part
    if any(id(t) in constant for t in keras.tree.flatten(outputs)):
        return None  # an output computed from the variables alone
    found: list = []
    seen: set = set()
    for t in operands.values():
        read = {id(v) for v in _variables_read(t, variables)}
        if seen & read:
            return None  # a variable read by two operands: two trainable copies would part
        seen.update(read)
        stand_ins = [s for s in model.inputs if id(s) in variables and id(variables[id(s)]) in read]
        function = None if id(t) in variables else keras.Model(stand_ins if len(stand_ins) > 1 else stand_ins[0], t)
        found.append(ConstantOperand([variables[id(s)] for s in stand_ins], function))
    if seen != {id(v) for v in variables.values()}:
        return None  # a variable that reaches no operand
    traced = keras.Model(inputs + list(operands.values()), outputs, name=model.name)
    return Traced(traced, found)


def _sublayers_cover(model, layer, held) -> bool:
    """Whether each of ``layer``'s variables is one it holds (``held``, standing in) or a weight of a sublayer called
    once in the trace (``self.conv(x)``; called twice, its copies in the quantized model would part)."""
    calls: dict = {}
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, layers.Layer) and op.variables:
            calls[id(op)] = calls.get(id(op), 0) + 1
            if calls[id(op)] > 1:
                return False
    owned = {id(v) for v in held.values()}
    owned.update(id(v) for op in model.operations if id(op) in calls for v in op.variables)
    return {id(v) for v in layer.variables} <= owned


def _own_sublayers(traced: Traced, parent: str) -> Traced | None:
    """``traced`` with each sublayer that holds weights replaced by a copy named ``<parent>_<name>`` (two blocks of one
    class have sublayers of one name; the quantized model needs them apart); None where one cannot be copied."""
    if not any(isinstance(op, layers.Layer) and op.variables for op in traced.model.operations):
        return traced

    def copy(rb, node, args, kwargs):
        op = node.operation
        if not (isinstance(op, layers.Layer) and op.variables) or isinstance(op, keras.Model):
            return None
        new = clone_layer(op, name=f"{parent}_{op.name}")
        out = new(*args, **kwargs)
        copy_weights(op, new)
        return out

    try:
        return Traced(rebuild(traced.model, copy), traced.operands)
    except UnsupportedModelError:
        return None


def _same_graph(a, b) -> bool:
    """Whether two traces compute the same ops in the same order on the same constants, whatever the ``training``
    they hand their sublayers."""
    nodes = [_nodes(a), _nodes(b)]
    if len(nodes[0]) != len(nodes[1]):
        return False
    for x, y in zip(*nodes):
        ox, oy = x.operation, y.operation
        if type(ox) is not type(oy):
            return False
        if isinstance(ox, layers.Layer) and ox.variables and ox is not oy:
            return False
        if not isinstance(ox, layers.InputLayer) and _config(ox) != _config(oy):
            return False
        if not _same_constants(x.arguments, y.arguments):
            return False
    return True


def _nodes(model) -> list:
    """A functional model's nodes, inputs first (each after the nodes it reads)."""
    return [n for depth in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[depth]]


def _config(op) -> dict:
    try:
        config = dict(op.get_config())
    except Exception:  # noqa: BLE001 (an op without a config: compared by class alone)
        return {}
    config.pop("name", None)
    return config


def _same_constants(x, y) -> bool:
    """Whether two calls' arguments hold the same non-tensor values (``training`` left out)."""
    kx = {k: v for k, v in x.kwargs.items() if k != "training"}
    ky = {k: v for k, v in y.kwargs.items() if k != "training"}
    fx, fy = keras.tree.flatten((x.args, kx)), keras.tree.flatten((y.args, ky))
    if len(fx) != len(fy) or sorted(kx) != sorted(ky):
        return False
    for u, v in zip(fx, fy):
        if isinstance(u, keras.KerasTensor) or isinstance(v, keras.KerasTensor):
            if not (isinstance(u, keras.KerasTensor) and isinstance(v, keras.KerasTensor)):
                return False
        elif not np.array_equal(np.asarray(u), np.asarray(v)):
            return False
    return True


def _operand_use(node, tensor, is_variable) -> bool:
    """Whether ``node`` reads ``tensor`` (computed from variables alone) as the converter folds it into a constant
    operand keras-eff holds: of ADD, SUB, MUL, MAXIMUM or MINIMUM with a tensor, the divisor of a division, a variable
    as a matmul's kernel."""
    args, name = node.arguments.args, type(node.operation).__name__
    if node.arguments.kwargs or len(args) != 2 or not all(isinstance(a, keras.KerasTensor) for a in args):
        return False
    if name == "Matmul":
        return is_variable and args[1] is tensor and args[0] is not tensor and len(tensor.shape) == 2
    if name == "TrueDivide":
        return args[1] is tensor and args[0] is not tensor
    return name in OPERAND_OPS + BOUND_OPS and (args[0] is tensor) != (args[1] is tensor)


def _variables_read(tensor, variables) -> list:
    """The variables (``variables``: stand-in id -> variable) ``tensor`` is computed from."""
    stack, seen, found = [tensor], set(), []
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) in variables:
            found.append(variables[id(t)])
            continue
        history = t._keras_history
        stack.extend(history.operation._inbound_nodes[history.node_index].input_tensors)
    return found
