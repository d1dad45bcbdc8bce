"""Checks that a converted file is what an int8 deployment needs: the converter itself is silent about float islands."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import FloatIslandError
from .model_file import read_graph

_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))
_SHOWN_OPS = 4  # float ops named in the message; all are in FloatIslandError.float_ops


@dataclass
class FloatOp:
    """An op of an int8 TFLite model that computes in float, as ``float_ops`` and ``FloatIslandError`` list them.

    Attributes:
        index: The op's index in the graph (execution order).
        op: The op's name, e.g. ``"CUMSUM"``.
        tensor: The name of its float output (or of the float constant it reads). TFLite tensor names carry the
            Keras layer's name in their path (``model_1/my_layer_1/Cumsum``).
        layer: The Keras layer it came from, a ``/``-separated path for a layer inside a nested model
            (``"block/conv"``), when the Keras model was at hand and its path names a layer; None otherwise.
        bounded: Every float input comes from a DEQUANTIZE and every float output goes only to QUANTIZE ops: the
            tensors around the op carry int8 ranges, so the converter kept it float because TFLite has no int8
            kernel for it.
        tensor_names: The names of the op's output and constant tensors, where ``find_layer`` looks for the layer
            (a graph output is named after the signature, not the layer, but the op's weights carry its path).
    """

    index: int
    op: str
    tensor: str
    layer: str | None = None
    bounded: bool = False
    tensor_names: tuple = field(default=(), repr=False)

    def find_layer(self, keras_model) -> str | None:
        """The Keras layer this op came from.

        Args:
            keras_model: The Keras model the file was converted from.

        Returns:
            The layer's name (a ``/``-separated path inside nested models), or None when no tensor of the op names
            a layer of ``keras_model``.
        """
        for name in self.tensor_names or (self.tensor,):
            layer = layer_of_tensor(name, keras_model)
            if layer:
                return layer
        return None

    def describe(self) -> str:
        """The op for a message.

        Returns:
            ``"CUMSUM (op #4) in layer 'running_total'"``, or ``"... from tensor 'model_1/x_1/Cumsum'"`` when the
            layer is not known.
        """
        where = f"in layer '{self.layer}'" if self.layer else f"from tensor '{self.tensor}'"
        return f"{self.op} (op #{self.index}) {where}"


def _scan(graph, int8_io: bool):
    """(problems, float ops) of a graph: see ``find_float_islands``."""
    t = graph.tensors
    problems, io_problems, found = [], [], []
    boundary = set()
    if int8_io:
        for i in graph.inputs:
            if t[i].dtype != np.int8:
                io_problems.append(f"model input '{t[i].name}' is {t[i].dtype.name}, not int8")
        for i in graph.outputs:
            if t[i].dtype != np.int8:
                io_problems.append(f"model output '{t[i].name}' is {t[i].dtype.name}, not int8")
    else:
        boundary = set(graph.inputs) | set(graph.outputs)
    producer = {o: op for op in graph.ops for o in op.outputs}
    consumers: dict[int, list] = {}
    for op in graph.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    for op in graph.ops:
        where = f"op #{op.index} {op.name}"
        in_float = [i for i in op.inputs if t[i].dtype in _FLOAT_TYPES]
        out_float = [i for i in op.outputs if t[i].dtype in _FLOAT_TYPES]
        if op.name == "QUANTIZE" and in_float:
            if in_float[0] not in boundary:
                problems.append(f"{where} quantizes float tensor '{t[in_float[0]].name}' inside the graph")
            continue
        if op.name == "DEQUANTIZE":
            if not all(i in boundary for i in op.outputs):
                problems.append(f"{where} dequantizes to float tensor '{t[op.outputs[0]].name}'")
            continue
        if out_float:
            problems.append(f"{where} computes in float: it produces float32 tensor '{t[out_float[0]].name}'")
            tensor = t[out_float[0]].name
        elif any(t[i].is_constant for i in in_float):
            const = next(i for i in in_float if t[i].is_constant)
            problems.append(f"{where} reads float constant '{t[const].name}'")
            tensor = t[const].name
        else:
            continue
        bounded = all(
            i in producer and producer[i].name == "DEQUANTIZE" for i in in_float if not t[i].is_constant
        ) and all(
            o not in graph.outputs and consumers.get(o) and all(c.name == "QUANTIZE" for c in consumers[o])
            for o in out_float
        )
        names = tuple(
            dict.fromkeys(
                [tensor] + [t[i].name for i in op.outputs] + [t[i].name for i in op.inputs if t[i].is_constant]
            )
        )
        found.append(FloatOp(op.index, op.name, tensor, bounded=bounded, tensor_names=names))
    return problems + io_problems, found


def find_float_islands(model, int8_io: bool = True) -> list[str]:
    """Lists, in graph order, every place where an int8 model computes in float.

    A place is a float input or output (when ``int8_io``), a QUANTIZE from float or DEQUANTIZE to float inside the
    graph, an op producing a float tensor, or an op reading float constants (weights left float). An int8-to-int8
    QUANTIZE is a requantization and is fine.

    Args:
        model: A TFLite model, as bytes or a path.
        int8_io: Require int8 inputs and outputs; False accepts float I/O and the QUANTIZE and DEQUANTIZE ops at
            the graph's boundary.

    Returns:
        One message per place (``"op #3 DEQUANTIZE dequantizes to float tensor '...'"``), the ops first and the
        inputs and outputs last; empty when the model is fully int8.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        for place in tflite_export.find_float_islands("model.tflite"):
            print(place)
        ```
    """
    return _scan(read_graph(model), int8_io)[0]


_SUFFIX = re.compile(r"_\d+$")


def _children(layer) -> list:
    if hasattr(layer, "layers"):  # a model: its own layers
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _name_variants(component: str) -> list:
    """The layer names a name-scope component may stand for, likeliest first. TensorFlow keeps scope names unique
    by appending one ``_N``, and an export traces the model after its scopes were first taken, so layer ``dense``
    appears as ``dense_1`` and layer ``dense_1`` as ``dense_1_2``: the name without its last suffix comes first."""
    stripped = _SUFFIX.sub("", component)
    return [stripped, component] if stripped != component else [component]


def _match(container, component: str):
    children = _children(container)
    for name in _name_variants(component):
        for child in children:
            if child.name == name:
                return child
    return None


def layer_of_tensor(tensor_name: str, keras_model) -> str | None:
    """The Keras layer a TFLite tensor came from, found from the name path TensorFlow gives it.

    Args:
        tensor_name: A TFLite tensor name, e.g. ``model_1/block_1/conv_1/Conv2D`` (fused names joined by ``;``).
        keras_model: The Keras model the file was converted from.

    Returns:
        The layer's name, a ``/``-separated path inside nested models (``block/conv`` here); None when no component
        of the path names a layer of ``keras_model``.

    Example:
        ```python
        layer_of_tensor("cnn_1/running_total_1/Cumsum", model)  # "running_total"
        ```
    """
    for part in tensor_name.split(";"):  # the converter joins the names of fused tensors with ';'
        comps = [c for c in part.split(":")[0].split("/") if c]
        if comps and keras_model.name in _name_variants(comps[0]):
            comps = comps[1:]
        container, path = keras_model, []
        for comp in comps:
            found = _match(container, comp)
            if found is None:
                break
            path.append(found.name)
            container = found
        if path:
            return "/".join(path)
    return None


def float_ops(model, int8_io: bool = True, keras_model=None) -> list:
    """The ops of an int8 TFLite model that compute in float (an island's DEQUANTIZE and QUANTIZE excluded).

    Args:
        model: A TFLite model, as bytes or a path.
        int8_io: As for ``find_float_islands``.
        keras_model: The Keras model the file was converted from, to name the layer of each op; None leaves
            ``FloatOp.layer`` None.

    Returns:
        ``FloatOp`` records in graph order; empty when no op computes in float.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        for op in float_ops(tflite_bytes, keras_model=model):
            print(op.describe())
        ```
    """
    ops = _scan(read_graph(model), int8_io)[1]
    if keras_model is not None:
        for op in ops:
            op.layer = op.find_layer(keras_model)
    return ops


def describe_float_ops(ops) -> str:
    """The first few float ops for a message.

    Args:
        ops: ``FloatOp`` records.

    Returns:
        ``"CUMSUM (op #4) in layer 'running_total', ..."``, with ``" and N more"`` beyond the first four.
    """
    shown = ", ".join(op.describe() for op in ops[:_SHOWN_OPS])
    return shown + (f" and {len(ops) - _SHOWN_OPS} more" if len(ops) > _SHOWN_OPS else "")


def check_int8(model, int8_io: bool = True, keras_model=None) -> None:
    """Checks that a TFLite model is fully int8, as an int8 deployment needs (the converter does not say).

    Args:
        model: A TFLite model, as bytes or a path.
        int8_io: Require int8 inputs and outputs too (see ``find_float_islands``).
        keras_model: The Keras model the file was converted from; with it the message names the Keras layer of
            each float op, without it the name path of the op's tensor (which carries the layer's name).

    Returns:
        None when the model is fully int8.

    Raises:
        FloatIslandError: Naming the ops that compute in float, in graph order (not only the DEQUANTIZE in front of
            them), and the layers they came from; saying when an op has int8 ranges around it but no int8 kernel.
            Its ``problems`` lists every place, its ``float_ops`` the float ops as ``FloatOp`` records.
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        tflite_export.check_int8(tflite_bytes, keras_model=model)
        ```
    """
    graph = read_graph(model)
    problems, ops = _scan(graph, int8_io)
    if not problems:
        return
    if keras_model is not None:
        for op in ops:
            op.layer = op.find_layer(keras_model)
    places = f" ({len(problems)} places in all, listed in the error's .problems)" if len(problems) > 1 else ""
    if not ops:
        raise FloatIslandError(
            f"the int8 model is not fully integer: {problems[0]}{places}. Give the model fake-quant ranges there "
            f"(keras_eff.quantize_model) or pass representative_data to calibrate it; to accept float anyway pass "
            f"allow_float=True.",
            problems,
            ops,
        )
    count = f"{len(ops)} ops compute" if len(ops) > 1 else "1 op computes"
    head = f"the int8 model is not fully integer: {count} in float: {describe_float_ops(ops)}{places}."
    no_kernel = [op for op in ops if op.bounded]
    advice = []
    if no_kernel:
        names = ", ".join(dict.fromkeys(op.op for op in no_kernel))
        it = "them" if len(no_kernel) > 1 else "it"
        where = ", ".join(
            dict.fromkeys(
                f"layer '{op.layer}'" if op.layer else f"the layer named in '{op.tensor}'" for op in no_kernel
            )
        )
        advice.append(
            f"The tensors around {names} carry int8 ranges, yet the converter kept {it} in float: TFLite "
            f"has no int8 kernel for {it}, and more data cannot change that. Replace the op in {where} with "
            f"ops that have int8 kernels."
        )
    if len(no_kernel) < len(ops):
        advice.append(
            "Where an op runs in float because a tensor has no quantization range (a layer left float, "
            "say), give the model fake-quant ranges there (keras_eff.quantize_model) or pass "
            "representative_data to calibrate it; an op that stays float with ranges around it has no int8 "
            "kernel: replace it."
        )
    advice.append("To accept float ops anyway pass allow_float=True.")
    raise FloatIslandError(" ".join([head, *advice]), problems, ops)
