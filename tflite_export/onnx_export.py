"""Keras 3 models to ONNX with tf2onnx, run with onnxruntime and compared with Keras.

A float model becomes a float ONNX graph; a model with fake-quant ops (a QAT model) keeps its quantization as
QuantizeLinear/DequantizeLinear pairs around float ops.

onnxruntime's graph optimizations (on by default, from level BASIC up) rewrite those pairs and the ops between them,
and then no longer compute exactly what the graph says: on a QAT CNN the optimized outputs differed from Keras by
several output steps, while the same graph run without optimizations matched Keras to float rounding (the
measurement is in docs/export.md, "ONNX"). ``run_onnx`` and ``compare_onnx`` therefore run the graph as exported by
default (``optimize=False``); ``optimize=True`` measures what a default onnxruntime deployment computes.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from .errors import TFLiteExportError
from .export_mode import export_view

DEFAULT_OPSET = 17


class OnnxExportError(TFLiteExportError):
    """tf2onnx could not convert a model."""


def to_onnx(model, opset: int = DEFAULT_OPSET, *, allow_uncalibrated: bool = False) -> bytes:
    """Converts a built Keras 3 model to ONNX with tf2onnx, with a free batch dimension.

    A float model becomes a float graph; a model with fake-quant ops keeps its quantization as
    QuantizeLinear/DequantizeLinear pairs. The model is traced inside ``export_view`` and is not changed. A quantized
    model whose activation ranges were never set is refused, as ``to_tflite`` refuses it.

    Args:
        model: A built Keras 3 model (it must have known inputs).
        opset: The ONNX opset, 13 to 21 (per-channel QuantizeLinear needs 13).
        allow_uncalibrated: Convert a quantized model whose activation ranges were never set, on its placeholder
            ranges.

    Returns:
        The serialized ONNX model, as bytes.

    Raises:
        TypeError: If ``model`` is not a Keras 3 model.
        ValueError: If ``opset`` is outside 13 to 21.
        UncalibratedModelError: If the model's activation ranges were never set and not ``allow_uncalibrated``.
        OnnxExportError: If the model has no known inputs, or tf2onnx fails (its message included).

    Example:
        ```python
        onnx_bytes = tflite_export.to_onnx(model)
        print(tflite_export.compare_onnx(model, onnx_bytes, x_test[:200]))
        ```
    """
    # Start-up: TensorFlow and Keras take ~8-10 s to import, and only to_onnx needs them (run_onnx and
    # count_onnx_ops read ONNX files without them); tf2onnx adds ~7 s more.
    import keras  # noqa: PLC0415 - see above
    import tensorflow as tf  # noqa: PLC0415 - see above

    if not isinstance(model, keras.Model):
        raise TypeError(f"to_onnx expects a Keras 3 model, got {type(model).__name__}")
    if not getattr(model, "inputs", None):
        raise OnnxExportError(f"model {model.name!r} has no known inputs: build it (give it an Input layer) first")
    if not 13 <= int(opset) <= 21:
        raise ValueError(f"opset must be between 13 and 21 (per-channel QuantizeLinear needs 13), got {opset}")
    if not allow_uncalibrated:
        from .convert import _check_ranges_set  # noqa: PLC0415 - .convert imports TensorFlow (~8 s): as above

        _check_ranges_set(model)
    import tf2onnx  # noqa: PLC0415 - tf2onnx costs ~7 s to import; only to_onnx needs it

    spec = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=_input_name(t, i)) for i, t in enumerate(model.inputs)]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), export_view(model):
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=int(opset))
    except Exception as err:
        raise OnnxExportError(f"tf2onnx could not convert model {model.name!r}: {type(err).__name__}: {err}") from err
    return proto.SerializeToString()


def _input_name(t, i) -> str:
    name = getattr(t, "name", None) or f"input_{i}"
    return name.split(":")[0].replace("/", "_")


def _session(onnx_model, optimize: bool):
    data = onnx_model
    if not isinstance(onnx_model, (bytes, bytearray)):
        with open(onnx_model, "rb") as f:
            data = f.read()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(bytes(data), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ValueError(f"onnxruntime cannot load the ONNX model ({len(data)} bytes): {err}") from err


def run_onnx(onnx_model, *xs, batch_size: int = 256, optimize: bool = False):
    """Runs an ONNX model in onnxruntime (CPU), in batches.

    Args:
        onnx_model: An ONNX model, as bytes or a path.
        *xs: One array per model input, each of shape ``(n, *input_shape)``; cast to float32.
        batch_size: The most samples per onnxruntime call.
        optimize: Run with onnxruntime's default graph optimizations, as a deployment would (this changes a QAT
            model's results, see the module docstring); False runs the graph exactly as exported.

    Returns:
        The output array, or a list of arrays for a model with several outputs, concatenated over the batches.

    Raises:
        ValueError: If onnxruntime cannot load the model, or the number of arrays differs from the model's inputs.

    Example:
        ```python
        y = tflite_export.run_onnx("model.onnx", x_test)
        ```
    """
    session = _session(onnx_model, optimize)
    inputs = session.get_inputs()
    if len(xs) != len(inputs):
        raise ValueError(f"the ONNX model takes {len(inputs)} inputs, got {len(xs)}")
    n = len(xs[0])
    parts = []
    for s in range(0, n, batch_size):
        feed = {d.name: np.asarray(x[s : s + batch_size], np.float32) for d, x in zip(inputs, xs)}
        parts.append(session.run(None, feed))
    outs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return outs[0] if len(outs) == 1 else outs


def count_onnx_ops(onnx_model) -> dict:
    """Counts the ops of an ONNX model's main graph by type.

    Args:
        onnx_model: An ONNX model, as bytes or a path.

    Returns:
        Op type -> count; QuantizeLinear and DequantizeLinear entries show a quantized export.

    Example:
        ```python
        tflite_export.count_onnx_ops(onnx_bytes).get("QuantizeLinear", 0)
        ```
    """
    model = (
        onnx.load_from_string(bytes(onnx_model))
        if isinstance(onnx_model, (bytes, bytearray))
        else onnx.load(onnx_model)
    )
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@dataclass
class OnnxComparison:
    """Keras vs onnxruntime on the same inputs (first output), as measured by ``compare_onnx``.

    ``str()`` gives a one-line summary.

    Attributes:
        n: The number of samples.
        max_abs_diff: The largest absolute difference between the outputs.
        max_rel_diff: ``max_abs_diff`` relative to the largest absolute Keras output.
        argmax_agreement: The share of samples with the same argmax.
        optimized: Whether onnxruntime ran with its graph optimizations.
    """

    n: int
    max_abs_diff: float
    max_rel_diff: float
    argmax_agreement: float
    optimized: bool = False

    def as_dict(self):
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return asdict(self)

    def __str__(self):
        how = "onnxruntime optimized" if self.optimized else "graph as exported"
        return (
            f"ONNX ({how}) vs Keras on {self.n} samples: max |diff| {self.max_abs_diff:.3g} "
            f"({self.max_rel_diff:.2g} relative), argmax agreement {self.argmax_agreement:.2%}"
        )


def compare_onnx(keras_model, onnx_model, x, batch_size: int = 256, optimize: bool = False) -> OnnxComparison:
    """Runs a Keras model and its ONNX export on the same inputs and compares their first outputs.

    Args:
        keras_model: The Keras model the ONNX file was made from.
        onnx_model: Its ONNX export, as bytes or a path.
        x: The inputs: one array of shape ``(n, *input_shape)``, or a list of arrays for several inputs.
        batch_size: The batch size for both runtimes.
        optimize: Run onnxruntime with its default graph optimizations (see ``run_onnx``).

    Returns:
        An `OnnxComparison`.

    Raises:
        ValueError: If ``x`` is empty, onnxruntime cannot load the model, or the output shapes differ.

    Example:
        ```python
        onnx_bytes = tflite_export.to_onnx(model)
        print(tflite_export.compare_onnx(model, onnx_bytes, x_test[:200]))
        ```
    """
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs[0]) == 0:
        raise ValueError("compare_onnx needs at least one input sample")
    ref = keras_model.predict(xs if len(xs) > 1 else xs[0], batch_size=batch_size, verbose=0)
    ref = np.asarray(ref[0] if isinstance(ref, list) else ref, np.float64)
    got = run_onnx(onnx_model, *xs, batch_size=batch_size, optimize=optimize)
    got = np.asarray(got[0] if isinstance(got, list) else got, np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"Keras output shape {ref.shape} differs from the ONNX output shape {got.shape}")
    diff = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref))) or 1.0
    n = len(ref)
    agree = float(np.mean(ref.reshape(n, -1).argmax(1) == got.reshape(n, -1).argmax(1)))
    return OnnxComparison(n, diff, diff / scale, agree, optimize)
