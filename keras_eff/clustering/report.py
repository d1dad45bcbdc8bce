"""What clustering (and pruning) left in a model: distinct values per kernel and per output channel, sparsity, and
for an int8 TFLite file the gzip size (shared values and zeros compress; that is where the saving shows).

``clustering_report`` reads a Keras model (clustering wrappers as trained, or a stripped model) or TFLite bytes; in a
TFLite file it reads the filter input of every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED op.
"""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from ..graph import functional_of
from ..layers import channel_shape, kernel_names
from .wrapper import ClusterWrapper, is_clusterable

# TFLite op -> the output-channel axis of its filter tensor.
_TFLITE_FILTER_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


@dataclass
class KernelStats:
    """One kernel: its shape, distinct values in all and at most per output channel, zeros."""

    name: str
    shape: tuple
    distinct: int
    max_distinct_per_channel: int
    sparsity: float
    dtype: str = "float32"

    def row(self) -> dict:
        return {"kernel": self.name, "shape": "×".join(map(str, self.shape)), "distinct": self.distinct,
                "max distinct / channel": self.max_distinct_per_channel, "sparsity": f"{self.sparsity:.1%}"}


@dataclass
class ClusteringReport:
    kernels: list = field(default_factory=list)
    size_bytes: int | None = None  # TFLite only
    gzip_bytes: int | None = None

    @property
    def max_distinct(self) -> int:
        return max((k.distinct for k in self.kernels), default=0)

    @property
    def max_distinct_per_channel(self) -> int:
        return max((k.max_distinct_per_channel for k in self.kernels), default=0)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all kernel weights."""
        total = sum(int(np.prod(k.shape)) for k in self.kernels)
        zeros = sum(k.sparsity * int(np.prod(k.shape)) for k in self.kernels)
        return zeros / total if total else 0.0

    def rows(self) -> list:
        return [k.row() for k in self.kernels]

    def to_dict(self) -> dict:
        return {"kernels": [asdict(k) for k in self.kernels], "size_bytes": self.size_bytes,
                "gzip_bytes": self.gzip_bytes, "sparsity": self.sparsity}

    def __str__(self):
        from ..reporting import markdown_table

        head = f"{len(self.kernels)} kernels, sparsity {self.sparsity:.1%}"
        if self.gzip_bytes is not None:
            head += f", {self.size_bytes:,} bytes, gzip {self.gzip_bytes:,} bytes"
        columns = ["kernel", "shape", "distinct", "max distinct / channel", "sparsity"]
        return head + "\n" + markdown_table(self.rows(), columns)


def kernel_stats(name, values, channel_shape) -> KernelStats:
    """Stats of one kernel; ``channel_shape`` is the broadcast shape of a per-output-channel vector."""
    values = np.asarray(values)
    n = int(np.prod(channel_shape))
    ids = np.broadcast_to(np.arange(n).reshape(channel_shape), values.shape).reshape(-1)
    order = np.argsort(ids, kind="stable")
    groups = np.split(values.reshape(-1)[order], np.cumsum(np.bincount(ids, minlength=n))[:-1])
    per_ch = max((np.unique(g).size for g in groups), default=0)
    return KernelStats(name, tuple(values.shape), int(np.unique(values).size), int(per_ch),
                       float(np.mean(values == 0)), str(values.dtype))


def _keras_report(model) -> ClusteringReport:
    report = ClusteringReport()
    found = functional_of(model)._flatten_layers(include_self=False, recursive=True) \
        if isinstance(model, keras.Model) else [model]
    for layer in found:
        if isinstance(layer, ClusterWrapper):
            inner, values = layer.layer, layer.clustered_weights()
        elif is_clusterable(layer):
            inner = layer
            by_name = {w.path.split("/")[-1]: w for w in layer.weights}
            values = {n: np.asarray(by_name[n] if n in by_name else getattr(layer, n)) for n in kernel_names(layer)}
        else:
            continue
        for n, v in values.items():
            report.kernels.append(kernel_stats(f"{inner.name}/{n}", v, channel_shape(inner, n, v.shape)))
    return report


def _tflite_report(data: bytes) -> ClusteringReport:
    import tflite_export as te

    graph = te.read_graph(data)
    interpreter = te.make_interpreter(data, use_xnnpack=False)
    report = ClusteringReport(size_bytes=len(data), gzip_bytes=len(gzip.compress(data, 9)))
    for op in graph.ops:
        axis = _TFLITE_FILTER_AXIS.get(op.name)
        if axis is None or len(op.inputs) < 2:
            continue
        t = graph.tensors[op.inputs[1]]
        if not t.is_constant:
            continue
        values = interpreter.get_tensor(t.index)
        ch = tuple(s if i == axis else 1 for i, s in enumerate(values.shape))
        report.kernels.append(kernel_stats(f"{op.name}:{t.name.split(';')[0]}", values, ch))
    return report


def clustering_report(model) -> ClusteringReport:
    """Distinct values per kernel and per output channel and sparsity of a Keras model or of TFLite bytes (with
    the file's size and gzip size). ``print(report)`` gives a table."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _tflite_report(bytes(model))
    if isinstance(model, keras.layers.Layer):
        return _keras_report(model)
    raise TypeError(f"clustering_report expects a Keras model or layer, or TFLite bytes; got {type(model).__name__}")
