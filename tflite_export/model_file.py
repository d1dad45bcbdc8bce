"""Loading TFLite flatbuffers safely and reading their graph: ops, tensors, quantization."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from .errors import InvalidTFLiteModel

_IDENTIFIER = b"TFL3"


def read_model(model) -> bytes:
    """Returns the flatbuffer bytes of a TFLite model, checked to be a TFLite file.

    Only the file identifier is checked (``TFL3``); ``make_interpreter`` and ``read_graph_flatbuffer`` find deeper
    damage.

    Args:
        model: A TFLite model, as bytes (bytes, bytearray, memoryview) or a path (str or ``os.PathLike``).

    Returns:
        The model's bytes.

    Raises:
        InvalidTFLiteModel: If ``model`` is of another type, the file cannot be read, or the data is empty or not a
            TFLite flatbuffer.

    Example:
        ```python
        data = tflite_export.read_model("model.tflite")
        ```
    """
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
        raise InvalidTFLiteModel(
            f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier); the file is corrupt or of another format"
        )
    return data


def _check_tensor_names(interpreter, model) -> None:
    """LiteRT decodes each tensor name as UTF-8 whenever its details are read (get_tensor_details, the op details,
    input/output details) and a damaged name then raises a bare UnicodeDecodeError there; refuse the file here,
    naming it and the tensor."""
    raw = getattr(interpreter, "_interpreter", None)
    if raw is None:
        return
    for sub in range(raw.NumSubgraphs()):
        for i in range(raw.NumTensors(sub)):
            try:
                raw.TensorName(i, sub)
            except UnicodeDecodeError as err:
                where = (
                    f"file {os.fspath(model)!r}" if isinstance(model, (str, os.PathLike)) else "the TFLite model bytes"
                )
                in_sub = f" of subgraph {sub}" if sub else ""
                raise InvalidTFLiteModel(
                    f"{where}: the name of tensor {i}{in_sub} is not valid UTF-8 ({err.reason} at byte {err.start}: "
                    f"{err.object[max(0, err.start - 8) : err.end + 8]!r}). The file is damaged; convert the model "
                    f"again (tflite_export.read_graph_flatbuffer still reads it, the bad bytes replaced)"
                ) from None


# LiteRT's kernel choices: its default XNNPACK delegate, its optimized built-in kernels without delegates, and its
# reference kernels (unoptimized C++, the code TFLite Micro's kernels derive from)
KERNELS = {
    "xnnpack": OpResolverType.AUTO,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": OpResolverType.BUILTIN_REF,
}


def resolve_kernels(kernels: str | None, use_xnnpack: bool) -> str:
    """The kernel choice, ``kernels`` where given, else from ``use_xnnpack``; an unknown name raises ValueError."""
    if kernels is None:
        return "xnnpack" if use_xnnpack else "builtin"
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(map(repr, KERNELS))}, got {kernels!r}")
    return kernels


def make_interpreter(
    model, num_threads: int | None = 1, use_xnnpack: bool = True, kernels: str | None = None
) -> Interpreter:
    """Loads a TFLite model in a LiteRT interpreter and allocates its tensors.

    Args:
        model: A TFLite model, as bytes or a path.
        num_threads: The interpreter's thread count (None lets LiteRT choose).
        use_xnnpack: Apply LiteRT's default XNNPACK delegate; False runs its built-in kernels.
        kernels: Which LiteRT kernels run the model, overriding ``use_xnnpack``: ``"xnnpack"`` (the XNNPACK delegate,
            LiteRT's default), ``"builtin"`` (its optimized built-in kernels, no delegate) or ``"reference"`` (its
            reference kernels, ``OpResolverType.BUILTIN_REF``: unoptimized; their ADD rounds as TFLite Micro's).

    Returns:
        An ``ai_edge_litert.interpreter.Interpreter``, ready to ``invoke``.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a TFLite file or LiteRT cannot load it (corrupt or truncated, or a
            tensor name that is not UTF-8).
        ValueError: If ``kernels`` is not one of the three names.

    Example:
        ```python
        interpreter = tflite_export.make_interpreter(tflite_bytes, use_xnnpack=False)
        ```
    """
    resolver = KERNELS[resolve_kernels(kernels, use_xnnpack)]
    data = read_model(model)
    try:
        interpreter = Interpreter(model_content=data, num_threads=num_threads, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        delegate = "XNNPACK" in str(err)
        raise InvalidTFLiteModel(
            f"LiteRT cannot load the model ({len(data)} bytes): {err}. "
            + (
                "XNNPACK refused an op of the file (an int8 op whose scales it cannot requantize, such as a tensor "
                "with a scale near 0); the built-in kernels may run it (kernels='builtin'), or convert the model "
                "again with that tensor's range widened"
                if delegate
                else "The file is corrupt or truncated; convert the model again"
            )
        ) from err
    _check_tensor_names(interpreter, model)
    return interpreter


@dataclass
class TensorInfo:
    """One tensor of a `Graph`.

    Attributes:
        index: The tensor's index in the subgraph.
        name: Its name.
        dtype: Its numpy dtype (``object`` for types numpy lacks, in ``read_graph_flatbuffer``).
        shape: Its shape.
        scales: Its quantization scales (empty when not quantized; one per channel when per-channel).
        zero_points: Its zero points.
        quantized_dimension: The channel axis of per-channel quantization.
        is_constant: Neither produced by an op nor a graph input (a weight or another constant).
    """

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
        """Whether the tensor has quantization scales."""
        return self.scales.size > 0


@dataclass
class OpInfo:
    """One op of a `Graph`.

    Attributes:
        index: The op's position in execution order.
        name: The builtin op's name (``CONV_2D``), or a custom op's custom code.
        inputs: The indices of its input tensors (optional inputs left out).
        outputs: The indices of its output tensors.
    """

    index: int
    name: str
    inputs: list
    outputs: list


@dataclass
class Graph:
    """The ops and tensors of a TFLite model's main subgraph, in execution order.

    Attributes:
        ops: An ``OpInfo`` per op, in execution order.
        tensors: Tensor index -> ``TensorInfo``.
        inputs: The indices of the graph's input tensors.
        outputs: The indices of the graph's output tensors.
        extra: Room for further facts about the graph (empty as read).
    """

    ops: list
    tensors: dict
    inputs: list
    outputs: list
    extra: dict = field(default_factory=dict)

    def op_names(self) -> list:
        """The ops' names in execution order, repeats included.

        Returns:
            A list of op names, e.g. ``["CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"]``.
        """
        return [op.name for op in self.ops]


def read_graph(model) -> Graph:
    """Reads the main subgraph of a TFLite model through LiteRT, without delegates.

    XNNPACK would hide ops behind DELEGATE nodes, so the interpreter runs the built-in kernels. Use
    ``read_graph_flatbuffer`` for files LiteRT cannot load.

    Args:
        model: A TFLite model, as bytes or a path.

    Returns:
        A `Graph` of the model's ops and tensors.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        graph = tflite_export.read_graph("model.tflite")
        print(graph.op_names())
        ```
    """
    interpreter = make_interpreter(model, use_xnnpack=False)
    ops = [
        OpInfo(d["index"], d["op_name"], [int(i) for i in d["inputs"] if i >= 0], [int(i) for i in d["outputs"]])
        for d in interpreter._get_ops_details()
    ]
    produced = {t for op in ops for t in op.outputs}
    graph_inputs = [d["index"] for d in interpreter.get_input_details()]
    tensors = {}
    for d in interpreter.get_tensor_details():
        q = d["quantization_parameters"]
        idx = d["index"]
        tensors[idx] = TensorInfo(
            index=idx,
            name=d["name"],
            dtype=np.dtype(d["dtype"]),
            shape=tuple(int(s) for s in d["shape"]),
            scales=np.asarray(q["scales"]),
            zero_points=np.asarray(q["zero_points"]),
            quantized_dimension=int(q["quantized_dimension"]),
            is_constant=idx not in produced and idx not in graph_inputs,
        )
    return Graph(
        ops=ops, tensors=tensors, inputs=graph_inputs, outputs=[d["index"] for d in interpreter.get_output_details()]
    )


_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "INT16": np.int16,
    "INT8": np.int8,
    "FLOAT64": np.float64,
    "UINT64": np.uint64,
    "UINT32": np.uint32,
    "UINT16": np.uint16,
}


def read_graph_flatbuffer(model) -> Graph:
    """Reads the main subgraph straight from the flatbuffer, without an interpreter.

    Works on files LiteRT cannot load, such as a Vela-compiled file whose ``ethos-u`` custom op only the NPU driver
    runs. A custom op's name is its custom code (``ethos-u``); a builtin's is its name in the TFLite schema. Types
    numpy has no dtype for (int4, strings, resources) read as ``object``.

    Args:
        model: A TFLite model, as bytes or a path.

    Returns:
        A `Graph` of the main subgraph's ops and tensors.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a TFLite file, or its flatbuffer is corrupt or truncated.

    Example:
        ```python
        graph = tflite_export.read_graph_flatbuffer(compilation.tflite)
        print(graph.op_names())  # e.g. ["ethos-u"]
        ```
    """
    data = read_model(model)
    try:
        fb = schema.Model.GetRootAs(data, 0)
        sub = fb.Subgraphs(0)
        builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        codes = []
        for j in range(fb.OperatorCodesLength()):
            code = fb.OperatorCodes(j)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            codes.append(
                custom.decode(errors="replace")
                if builtin == schema.BuiltinOperator.CUSTOM and custom
                else builtin_names.get(builtin, f"BUILTIN_{builtin}")
            )
        ops = []
        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            ops.append(
                OpInfo(
                    i,
                    codes[op.OpcodeIndex()],
                    [int(t) for t in op.InputsAsNumpy() if t >= 0] if op.InputsLength() else [],
                    [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else [],
                )
            )
        produced = {t for op in ops for t in op.outputs}
        inputs = [int(t) for t in sub.InputsAsNumpy()] if sub.InputsLength() else []
        tensors = {}
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            q = t.Quantization()
            scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0, np.float32)
            zps = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0, np.int64)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            tensors[i] = TensorInfo(
                index=i,
                name=(t.Name() or b"").decode(errors="replace"),
                dtype=np.dtype(_NUMPY_TYPES.get(type_names.get(t.Type(), ""), object)),
                shape=shape,
                scales=np.asarray(scales),
                zero_points=np.asarray(zps),
                quantized_dimension=int(q.QuantizedDimension()) if q is not None else 0,
                is_constant=i not in produced and i not in inputs,
            )
        outputs = [int(t) for t in sub.OutputsAsNumpy()] if sub.OutputsLength() else []
    except Exception as err:  # a truncated flatbuffer raises anything from struct errors to IndexError
        raise InvalidTFLiteModel(
            f"cannot read the TFLite flatbuffer ({len(data)} bytes): {type(err).__name__}: "
            f"{err}. The file is corrupt or truncated"
        ) from err
    return Graph(ops=ops, tensors=tensors, inputs=inputs, outputs=outputs)
