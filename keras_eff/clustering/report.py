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

import tflite_export as te

from ..graph import functional_of
from ..layers import channel_shape, kernel_names
from ..reporting import markdown_table
from .wrapper import ClusterWrapper, is_clusterable

# TFLite op -> the output-channel axis of its filter tensor.
_TFLITE_FILTER_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


@dataclass
class KernelStats:
    """What clustering and pruning left in one kernel.

    Attributes:
        name: ``layer/kernel`` for a Keras kernel; ``OP:tensor`` for a TFLite filter.
        shape: The kernel's shape.
        distinct: Distinct values in the whole kernel.
        max_distinct_per_channel: The most distinct values of any output channel.
        sparsity: The fraction of weights that are exactly zero.
        dtype: The values' dtype (``"float32"``; ``"int8"`` in a TFLite file).
    """

    name: str
    shape: tuple
    distinct: int
    max_distinct_per_channel: int
    sparsity: float
    dtype: str = "float32"

    def row(self) -> dict:
        """Gives the stats as a table row.

        Returns:
            ``{"kernel", "shape", "distinct", "max distinct / channel", "sparsity"}`` with formatted values.
        """
        return {
            "kernel": self.name,
            "shape": "×".join(map(str, self.shape)),
            "distinct": self.distinct,
            "max distinct / channel": self.max_distinct_per_channel,
            "sparsity": f"{self.sparsity:.1%}",
        }


@dataclass
class ClusteringReport:
    """What `clustering_report` finds: distinct values and sparsity of every kernel, and for TFLite bytes the sizes.

    ``print(report)`` gives a summary line and a table.

    Attributes:
        kernels: A `KernelStats` per kernel, in model order.
        size_bytes: The TFLite file's size; None for a Keras model.
        gzip_bytes: The TFLite file's size after gzip (level 9), where shared values and zeros show; None for a Keras
            model.
        clustered_layers: Names of the layers wrapped in a `ClusterWrapper` (what `cluster_model` wrapped), in model
            order; empty for a stripped model or TFLite bytes.
    """

    kernels: list = field(default_factory=list)
    size_bytes: int | None = None  # TFLite only
    gzip_bytes: int | None = None
    clustered_layers: list = field(default_factory=list)

    @property
    def max_distinct(self) -> int:
        """The most distinct values of any kernel (0 with no kernels)."""
        return max((k.distinct for k in self.kernels), default=0)

    @property
    def max_distinct_per_channel(self) -> int:
        """The most distinct values of any output channel of any kernel (0 with no kernels)."""
        return max((k.max_distinct_per_channel for k in self.kernels), default=0)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all kernel weights."""
        total = sum(int(np.prod(k.shape)) for k in self.kernels)
        zeros = sum(k.sparsity * int(np.prod(k.shape)) for k in self.kernels)
        return zeros / total if total else 0.0

    def rows(self) -> list:
        """Lists the kernels as table rows.

        Returns:
            One `KernelStats.row` per kernel.
        """
        return [k.row() for k in self.kernels]

    def to_dict(self) -> dict:
        """Gives the report as plain data, for JSON.

        Returns:
            ``{"kernels": [...], "size_bytes", "gzip_bytes", "sparsity", "clustered_layers"}``.
        """
        return {
            "kernels": [asdict(k) for k in self.kernels],
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "sparsity": self.sparsity,
            "clustered_layers": list(self.clustered_layers),
        }

    def __str__(self):
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
    return KernelStats(
        name,
        tuple(values.shape),
        int(np.unique(values).size),
        int(per_ch),
        float(np.mean(values == 0)),
        str(values.dtype),
    )


def _keras_report(model) -> ClusteringReport:
    report = ClusteringReport()
    found = (
        functional_of(model)._flatten_layers(include_self=False, recursive=True)
        if isinstance(model, keras.Model)
        else [model]
    )
    inside = {id(w.layer) for w in found if isinstance(w, ClusterWrapper)}  # reported through their wrapper
    for layer in found:
        if id(layer) in inside:
            continue
        if isinstance(layer, ClusterWrapper):
            inner, values = layer.layer, layer.clustered_weights()
            report.clustered_layers.append(inner.name)
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
    """Counts the distinct values and zeros of every kernel of a Keras model or a TFLite file.

    A Keras model may hold clustering wrappers (their clustered kernels are read) or be stripped; every clusterable
    layer's kernels are reported, nested models included. In TFLite bytes the filter of every CONV_2D,
    DEPTHWISE_CONV_2D and FULLY_CONNECTED op is read, and the file's size and gzip size are given.

    Args:
        model: A Functional or Sequential Keras model, a single Keras layer, or the bytes of a TFLite file. Not
            changed.

    Returns:
        A `ClusteringReport`; ``print(report)`` gives a table.

    Raises:
        TypeError: If ``model`` is neither a Keras model or layer nor bytes.
        UnsupportedModelError: If ``model`` is a subclassed or unbuilt Sequential model.

    Example:
        ```python
        report = keras_eff.clustering_report(keras_eff.strip(clustered))
        print(report.max_distinct_per_channel, f"{report.sparsity:.1%}")
        print(keras_eff.clustering_report(tflite_bytes))  # with the file's gzip size
        ```
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _tflite_report(bytes(model))
    if isinstance(model, keras.layers.Layer):
        return _keras_report(model)
    raise TypeError(f"clustering_report expects a Keras model or layer, or TFLite bytes; got {type(model).__name__}")
