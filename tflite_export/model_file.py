"""Loading TFLite flatbuffers safely and reading their graph: ops, tensors, quantization."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from .errors import InvalidTFLiteModel

_IDENTIFIER = b"TFL3"


def read_model(model) -> bytes:
    """Returns the flatbuffer bytes of ``model`` (bytes or a path), checked to be a TFLite file."""
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as err:
            raise InvalidTFLiteModel(f"cannot read TFLite file {os.fspath(model)!r}: {err.strerror}") from err
        where = f"file {os.fspath(model)!r}"
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "the TFLite model bytes"
    else:
        raise InvalidTFLiteModel(f"expected TFLite bytes or a path to a .tflite file, got {type(model).__name__}")
    if not data:
        raise InvalidTFLiteModel(f"{where}: empty (0 bytes); convert the model again with tflite_export.to_tflite")
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise InvalidTFLiteModel(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier); the file is corrupt "
                                 f"or of another format")
    return data


def make_interpreter(model, num_threads: int | None = 1, use_xnnpack: bool = True) -> Interpreter:
    """A LiteRT interpreter with its tensors allocated; a corrupt file raises ``InvalidTFLiteModel``."""
    data = read_model(model)
    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_content=data, num_threads=num_threads,
                                  experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise InvalidTFLiteModel(f"LiteRT cannot load the model ({len(data)} bytes): {err}. The file is corrupt or "
                                 f"truncated; convert the model again") from err
    return interpreter


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: np.dtype
    shape: tuple
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int
    is_constant: bool = False

    @property
    def is_quantized(self) -> bool:
        return self.scales.size > 0


@dataclass
class OpInfo:
    index: int
    name: str
    inputs: list
    outputs: list


@dataclass
class Graph:
    """The ops and tensors of a TFLite model's main subgraph, in execution order."""

    ops: list
    tensors: dict
    inputs: list
    outputs: list
    extra: dict = field(default_factory=dict)

    def op_names(self) -> list:
        return [op.name for op in self.ops]


def read_graph(model) -> Graph:
    """Reads the graph of a TFLite model without delegates (XNNPACK would hide ops behind DELEGATE nodes)."""
    interpreter = make_interpreter(model, use_xnnpack=False)
    ops = [OpInfo(d["index"], d["op_name"], [int(i) for i in d["inputs"] if i >= 0],
                  [int(i) for i in d["outputs"]]) for d in interpreter._get_ops_details()]
    produced = {t for op in ops for t in op.outputs}
    graph_inputs = [d["index"] for d in interpreter.get_input_details()]
    tensors = {}
    for d in interpreter.get_tensor_details():
        q = d["quantization_parameters"]
        idx = d["index"]
        tensors[idx] = TensorInfo(
            index=idx, name=d["name"], dtype=np.dtype(d["dtype"]), shape=tuple(int(s) for s in d["shape"]),
            scales=np.asarray(q["scales"]), zero_points=np.asarray(q["zero_points"]),
            quantized_dimension=int(q["quantized_dimension"]),
            is_constant=idx not in produced and idx not in graph_inputs)
    return Graph(ops=ops, tensors=tensors, inputs=graph_inputs,
                 outputs=[d["index"] for d in interpreter.get_output_details()])
