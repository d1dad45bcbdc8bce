"""MACs and parameters counted from a TFLite graph itself: its ops and tensor shapes (batch 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model_file import read_graph


@dataclass
class OpCount:
    index: int
    op: str
    output: str
    output_shape: tuple
    macs: int
    params: int


@dataclass
class MacCount:
    ops: list = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(o.macs for o in self.ops)

    @property
    def total_params(self) -> int:
        return sum(o.params for o in self.ops)

    def by_op_type(self) -> dict:
        out = {}
        for o in self.ops:
            out[o.op] = out.get(o.op, 0) + o.macs
        return out


def _size(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def count_macs(model) -> MacCount:
    """Multiply-accumulates and weight parameters of each op, for one sample.

    CONV_2D: out_h·out_w·c_out·k_h·k_w·c_in; DEPTHWISE_CONV_2D: out_h·out_w·c_out·k_h·k_w; FULLY_CONNECTED:
    rows·units·in; TRANSPOSE_CONV: in_h·in_w·c_in·k_h·k_w·c_out; BATCH_MATMUL: out·K. Elementwise ops, pooling and
    activations count no MACs. Parameters are the weight and bias elements of these ops.
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
