"""Checks that a converted file is what an int8 deployment needs: the converter itself is silent about float islands."""

from __future__ import annotations

import numpy as np

from .errors import FloatIslandError
from .model_file import read_graph

_FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))


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
    graph = read_graph(model)
    t = graph.tensors
    problems, io_problems = [], []
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
    for op in graph.ops:
        where = f"op #{op.index} {op.name}"
        in_float = [i for i in op.inputs if t[i].dtype in _FLOAT_TYPES]
        out_float = [i for i in op.outputs if t[i].dtype in _FLOAT_TYPES]
        if op.name == "QUANTIZE" and in_float:
            if not (in_float[0] in boundary):
                problems.append(f"{where} quantizes float tensor '{t[in_float[0]].name}' inside the graph")
            continue
        if op.name == "DEQUANTIZE":
            if not all(i in boundary for i in op.outputs):
                problems.append(f"{where} dequantizes to float tensor '{t[op.outputs[0]].name}'")
            continue
        if out_float:
            problems.append(f"{where} computes in float: it produces float32 tensor '{t[out_float[0]].name}'")
        elif any(t[i].is_constant for i in in_float):
            const = next(i for i in in_float if t[i].is_constant)
            problems.append(f"{where} reads float constant '{t[const].name}'")
    return problems + io_problems


def check_int8(model, int8_io: bool = True) -> None:
    """Checks that a TFLite model is fully int8, as an int8 deployment needs (the converter does not say).

    Args:
        model: A TFLite model, as bytes or a path.
        int8_io: Require int8 inputs and outputs too (see ``find_float_islands``).

    Returns:
        None when the model is fully int8.

    Raises:
        FloatIslandError: Naming the first op (in graph order) and tensor where the model leaves int8 and, where it
            is another op, the first op that computes in float; its ``problems`` lists every place.
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        tflite_export.check_int8(tflite_bytes)
        ```
    """
    problems = find_float_islands(model, int8_io=int8_io)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        # a DEQUANTIZE only marks where an island starts: name the first op computing in float too (its tensor
        # carries the name of the layer left float, a Lambda say)
        island = next((p for p in problems if " computes in float" in p), None)
        where = f"; first float op: {island}" if island and island != problems[0] else ""
        raise FloatIslandError(
            f"the int8 model is not fully integer: {problems[0]}{more}{where}. A tensor there has no quantization "
            f"range (a layer left float, say): give the model fake-quant ranges there (keras_eff.quantize_model) or "
            f"pass representative_data to calibrate it; to accept float ops anyway pass allow_float=True.", problems)
