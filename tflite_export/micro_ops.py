"""Which builtin ops the installed TFLite Micro interpreter can run, found by asking it, and their resolver calls.

How the list is determined: TFLite Micro looks every op of a model up in its op resolver before it prepares
anything, and a missing op fails with "Failed to get registration from op code X" (or "Didn't find op for builtin
opcode"). ``probe_micro_ops`` rewrites every op of a small model to one builtin code at a time, loads the result in
the ``tflite-micro`` Python interpreter (in a child process, as a mis-wired op may crash it) and looks for that
message. Any other outcome, including a failure in the kernel's Prepare on tensors that do not fit it, means the op is
registered. docs/export.md lists what this finds with the pinned tflite-micro version.

A registered op can still refuse a tensor type (many kernels take only int8 or float32): loading the real model in
TFLite Micro, as ``find_arena_size`` does, is the final word.
"""

from __future__ import annotations

import functools
from pathlib import Path

import tflite_micro
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from .micro_process import MicroProcess
from .model_file import read_graph, read_model

_MISSING_MARKERS = ("Failed to get registration", "Didn't find op")

# Ops TFLite Micro registers with float32 kernels only (measured on the pinned tflite-micro: EXP refuses int8 input
# in Prepare, LOG and SQRT in Invoke): an int8 one counts as missing in ``unsupported_micro_ops``.
_FLOAT_ONLY = frozenset({"EXP", "LOG", "SQRT"})

# MicroMutableOpResolver method names that do not follow from the op name in CamelCase.
_RESOLVER_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "ethos-u": "AddEthosU",  # the custom op of a Vela-compiled file (Arm Ethos-U NPU driver)
}


def builtin_codes() -> dict:
    """The builtin ops of the TFLite schema that ships with tflite-micro.

    Returns:
        Builtin op name -> its code, e.g. ``{"ADD": 0, ...}``.
    """
    return {k: v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def resolver_method(op_name: str) -> str:
    """The ``tflite::MicroMutableOpResolver`` method that registers an op.

    The name is the op's in CamelCase (``CONV_2D`` -> ``AddConv2D``) except for a few irregular ones
    (``BATCH_MATMUL`` -> ``AddBatchMatMul``, ...); the ``ethos-u`` custom op of a Vela-compiled file gives
    ``AddEthosU``. The name is not checked against TFLite Micro.

    Args:
        op_name: A builtin op name as TFLite writes it (``CONV_2D``), or ``ethos-u``.

    Returns:
        The method name, e.g. ``"AddConv2D"``.

    Example:
        ```python
        tflite_export.resolver_method("DEPTHWISE_CONV_2D")  # "AddDepthwiseConv2D"
        ```
    """
    if op_name in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op_name]
    parts = op_name.split("_")
    return "Add" + "".join(p if p[:1].isdigit() else p[:1] + p[1:].lower() for p in parts)


def probe_micro_ops(model, op_names=None) -> dict:
    """Asks the installed TFLite Micro interpreter which builtin ops it has registered.

    Each op of ``model`` is rewritten to one builtin code at a time and loaded in TFLite Micro in a child process;
    only the "op not found" message means the op is missing (see the module docstring). A registered op can still
    refuse a tensor type: loading the real model, as ``find_arena_size`` does, is the final word.

    Args:
        model: Any TFLite model (bytes or a path), used as the vehicle for the probe.
        op_names: The builtin op names to probe; None probes every builtin of the schema.

    Returns:
        Op name -> True when TFLite Micro has it registered.

    Raises:
        ValueError: If ``op_names`` holds a name that is not a TFLite builtin op.
        InvalidTFLiteModel: If ``model`` is not a TFLite file.

    Example:
        ```python
        tflite_export.probe_micro_ops("model.tflite", ["CONV_2D", "GELU"])  # {"CONV_2D": True, "GELU": False}
        ```
    """
    data = read_model(model)
    codes = builtin_codes()
    names = list(codes) if op_names is None else list(op_names)
    unknown = [n for n in names if n not in codes]
    if unknown:
        raise ValueError(f"unknown TFLite builtin op(s): {', '.join(unknown)}")
    out = {}
    with MicroProcess(data) as proc:
        for name in names:
            reply = proc.request(op="opcode", code=codes[name])
            out[name] = not any(m in reply.log for m in _MISSING_MARKERS)
    return out


def _bundled_model() -> bytes:
    """The small float model that ships inside the tflite-micro wheel, a vehicle for the probe."""
    path = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    return read_model(path)


@functools.lru_cache(maxsize=1)
def micro_supported_ops() -> frozenset:
    """Every builtin op the installed TFLite Micro interpreter registers.

    The whole schema is probed with ``probe_micro_ops`` on the small model that ships with tflite-micro, once per
    process (the answer is cached).

    Returns:
        The names of the registered builtin ops.
    """
    return frozenset(name for name, ok in probe_micro_ops(_bundled_model()).items() if ok)


def unsupported_micro_ops(model) -> list:
    """Lists the ops of a model that the installed TFLite Micro interpreter lacks.

    Only the model's own ops are probed (with ``probe_micro_ops``); an op that is not a builtin (a custom op)
    counts as lacking, and so does an int8 EXP, LOG or SQRT (TFLite Micro has float32 kernels only for those).

    Args:
        model: A TFLite model, as bytes or a path.

    Returns:
        The names of the missing ops, in graph order without repeats; empty when TFLite Micro has them all.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        missing = tflite_export.unsupported_micro_ops("model.tflite")  # e.g. ["GELU"]
        ```
    """
    graph = read_graph(model)
    used = list(dict.fromkeys(graph.op_names()))
    support = probe_micro_ops(model, [n for n in used if n in builtin_codes()])
    integer = {op.name for op in graph.ops if op.name in _FLOAT_ONLY and graph.tensors[op.inputs[0]].is_quantized}
    return [n for n in used if not support.get(n, False) or n in integer]
