"""MACs and parameters counted from a TFLite graph itself: its ops and tensor shapes (batch 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model_file import read_graph


@dataclass
class OpCount:
    """The multiply-accumulates and weight parameters of one op, for one sample.

    Attributes:
        index: The op's position in the graph.
        op: The op's name (``CONV_2D``, ...).
        output: The name of its first output tensor.
        output_shape: That tensor's shape.
        macs: Its multiply-accumulates (0 for elementwise ops, pooling and activations).
        params: Its weight and bias elements (constant inputs of the ops that count MACs).
    """

    index: int
    op: str
    output: str
    output_shape: tuple
    macs: int
    params: int


@dataclass
class MacCount:
    """The MACs and parameters of a TFLite model, per op, as counted by ``count_macs``.

    Attributes:
        ops: An `OpCount` per op, in graph order.
    """

    ops: list = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        """The multiply-accumulates of one inference, all ops together."""
        return sum(o.macs for o in self.ops)

    @property
    def total_params(self) -> int:
        """The weight and bias elements of the ops that count MACs."""
        return sum(o.params for o in self.ops)

    def by_op_type(self) -> dict:
        """MACs summed per op type.

        Returns:
            Op name -> multiply-accumulates, e.g. ``{"CONV_2D": 1843200, "FULLY_CONNECTED": 10240}``.
        """
        out: dict[str, int] = {}
        for o in self.ops:
            out[o.op] = out.get(o.op, 0) + o.macs
        return out


def _size(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def count_macs(model) -> MacCount:
    """Counts the multiply-accumulates and weight parameters of each op of a TFLite model, for one sample.

    The counts come from the graph's ops and tensor shapes: CONV_2D: out_h·out_w·c_out·k_h·k_w·c_in;
    DEPTHWISE_CONV_2D: out_h·out_w·c_out·k_h·k_w; FULLY_CONNECTED: rows·units·in; TRANSPOSE_CONV:
    in_h·in_w·c_in·k_h·k_w·c_out; BATCH_MATMUL: out·K. Elementwise ops, pooling and activations count no MACs.
    Parameters are the weight and bias elements of these ops. The shapes are the file's: a file with a dynamic
    batch axis is read at batch 1.

    Args:
        model: A TFLite model, as bytes or a path.

    Returns:
        A `MacCount` with an `OpCount` per op; ``total_macs`` and ``total_params`` sum them.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        counts = tflite_export.count_macs("model.tflite")
        print(counts.total_macs, counts.by_op_type())
        ```
    """
    graph = read_graph(model)
    t = graph.tensors
    counts = MacCount()
    for op in graph.ops:
        out = t[op.outputs[0]]
        macs = params = 0
        ins = [t[i] for i in op.inputs]
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = ins[1]
            params = sum(_size(x.shape) for x in ins[1:] if x.is_constant)
            if op.name == "CONV_2D":
                macs = _size(out.shape) * _size(w.shape[1:])
            elif op.name == "DEPTHWISE_CONV_2D":
                macs = _size(out.shape) * w.shape[1] * w.shape[2]
            else:
                macs = _size(out.shape) * w.shape[-1]
        elif op.name == "TRANSPOSE_CONV":  # inputs: output_shape, weights (c_out, kh, kw, c_in), input[, bias]
            w, x = ins[1], ins[2]
            params = sum(_size(a.shape) for a in ins[1:] if a.is_constant and a is not x)
            macs = _size(x.shape[:-1]) * _size(w.shape)
        elif op.name == "BATCH_MATMUL":
            k = ins[0].shape[-1]
            macs = _size(out.shape) * k
            params = sum(_size(a.shape) for a in ins if a.is_constant)
        counts.ops.append(OpCount(op.index, op.name, out.name, out.shape, int(macs), int(params)))
    return counts
