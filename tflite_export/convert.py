"""Keras 3 model → TFLite flatbuffer: float, post-training full-int8, or full-int8 from fake-quant ranges."""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from .checks import check_int8
from .errors import FloatIslandError, TFLiteExportError, UncalibratedModelError
from .export_mode import export_view
from .ranges import find_unset_ranges
from .samples import check_samples

_FAKE_QUANT_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel", "FakeQuantWithMinMaxArgs")


@contextlib.contextmanager
def _quiet_export():
    """Silences the SavedModel export: Keras' printed summary, and TensorFlow's INFO log ("Assets written to ...",
    whose handler writes to the streams it captured at import, so redirecting stdout alone misses it)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(max(level, 30))  # WARNING and above still shown
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _model_inputs(model):
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise TFLiteExportError(
            f"model {model.name!r} has no known inputs: build it (call it once on data, or "
            f"give it an Input layer) before exporting"
        )
    return inputs


def _traced_op_types(model) -> set:
    """Op types of the model's inference graph, nested functions included."""
    inputs = _model_inputs(model)
    specs = [tf.TensorSpec(shape=t.shape, dtype=t.dtype) for t in inputs]

    @tf.function
    def fn(*xs):
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    with export_view(model):
        graph = fn.get_concrete_function(*specs).graph
    types = {op.type for op in graph.get_operations()}
    for f in graph._functions.values():  # layers traced as nested functions
        types.update(node.op for node in f.definition.node_def)
    return types


def has_fake_quant(model) -> bool:
    """Whether a Keras model's graph holds TensorFlow FakeQuant ops, that is, carries its own int8 ranges.

    The model is traced for inference (inside ``export_view``, as for export), nested functions included; it is
    not changed.

    Args:
        model: A built Keras 3 model.

    Returns:
        True when the traced graph holds a ``FakeQuantWithMinMaxVars``, ``...PerChannel`` or
        ``FakeQuantWithMinMaxArgs`` op.

    Raises:
        TFLiteExportError: If the model has no known inputs (it was never built).

    Example:
        ```python
        if not tflite_export.has_fake_quant(model):
            data = tflite_export.to_tflite(model, representative_data=x_train[:300])
        ```
    """
    return bool(_traced_op_types(model) & set(_FAKE_QUANT_OPS))


def _saved_model_has_fake_quant(folder) -> bool:
    """The same question asked of an exported SavedModel, without tracing the model again."""
    proto = saved_model_pb2.SavedModel()
    with open(f"{folder}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    for meta in proto.meta_graphs:
        ops = {n.op for n in meta.graph_def.node}
        for fn in meta.graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
        if ops & set(_FAKE_QUANT_OPS):
            return True
    return False


def _as_input_arrays(model, data, max_samples):
    """Representative data as one float32 array per model input, validated against the input shapes."""
    inputs = _model_inputs(model)
    if isinstance(data, tf.data.Dataset):
        batches = []
        count = 0
        for item in data:
            x = item[0] if isinstance(item, (tuple, list)) and len(inputs) == 1 else item
            batches.append(tf.nest.map_structure(np.asarray, x))
            count += len(tf.nest.flatten(x)[0])
            if count >= max_samples:
                break
        if not batches:
            raise ValueError("representative_data is an empty dataset: give it a few hundred typical inputs")
        flat = [tf.nest.flatten(b) for b in batches]
        arrays = [np.concatenate([f[i] for f in flat]) for i in range(len(flat[0]))]
    elif isinstance(data, (list, tuple)):
        arrays = [np.asarray(a) for a in data]
    else:
        arrays = [np.asarray(data)]
    if len(arrays) != len(inputs):
        raise ValueError(f"representative_data holds {len(arrays)} arrays but the model has {len(inputs)} inputs")
    return [
        check_samples(a, t.shape[1:], f"representative_data input {i}", f"the model input {t.name!r}", max_samples)
        for i, (a, t) in enumerate(zip(arrays, inputs))
    ]


def _export_problems(model) -> list:
    """Asks every layer that knows of export limits (the ``export_problems`` hook) what int8 TFLite cannot hold."""
    problems = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        hook = getattr(layer, "export_problems", None)
        if callable(hook):
            problems.extend(hook())
    return problems


def _input_signature(model, batch_size):
    """A fixed-batch signature for the export (None keeps Keras's dynamic batch axis)."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (a dynamic batch), got {batch_size!r}")
    specs = []
    for t in _model_inputs(model):
        if any(d is None for d in t.shape[1:]):
            raise TFLiteExportError(
                f"model input {t.name!r} has shape {tuple(t.shape)}: a static-shape file needs "
                f"every axis but the batch fixed; give the model a fixed input size"
            )
        specs.append(tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype, name=getattr(t, "name", None)))
    return specs


# TensorFlow's pattern for a root name scope: Keras's export enters one named after the model, and where TensorFlow
# refuses the name the scope stays on Keras's stack, prefixing every variable the process creates afterwards
_ROOT_SCOPE = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def _write_saved_model(model, folder, signature):
    """Writes the model's inference function to ``folder`` as a SavedModel: one trace, the variables it reads and
    nothing else, which is all the converter reads.

    Keras's ``model.export`` traces the model three times and saves its whole object tree: on NASNetMobile's quantized
    model that took 68.6 s and +1.4 GB, this 32.5 s and +0.9 GB, the same file. A function that reads another kind
    of resource (a lookup table), and a subclassed model (no ``inputs``: Keras infers its signature from its first
    call), go through ``model.export``, which handles those."""
    function = _serving_function(model, signature)
    if function is None:
        if not _ROOT_SCOPE.fullmatch(model.name):  # checked here: Keras's export would leave its name scope open
            raise ValueError(
                f"{model.name!r} is not a valid root scope name (TensorFlow's {_ROOT_SCOPE.pattern!r}): TensorFlow "
                f"takes the model's name as a scope name, which must start with a letter, a digit or '.': give the "
                f"model another name (keras.Model(..., name='...'), or a class name that does not start with '_')"
            )
        model.export(folder, format="tf_saved_model", verbose=False, input_signature=signature)
        return
    module = tf.Module()
    module.model_variables = list(function.variables)  # the signature alone: saving the tf.function retraces
    tf.saved_model.save(module, folder, signatures={"serving_default": function})


def _serving_function(model, signature):
    """The model's inference function traced once, or None where ``model.export`` must write it (no ``inputs``, or a
    resource other than a variable read)."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    specs = signature or [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name) for t in inputs]
    structure = model.input

    @tf.function(input_signature=specs, autograph=False)
    def serve(*xs):
        return model(keras.tree.pack_sequence_as(structure, list(xs)), training=False)

    function = serve.get_concrete_function()
    handles = {id(v.handle) for v in function.variables}
    if any(c.dtype == tf.resource and id(c) not in handles for c in function.captured_inputs):
        return None
    return function


def _check_ranges_set(model):
    """Refuses a model whose own activation ranges were never set (see ``tflite_export.ranges``)."""
    unset = find_unset_ranges(model)
    if not unset:
        return
    layer, names = unset[0]
    first = f"layer {layer!r}" if names == [layer] else f"layer {layer!r} ({', '.join(names)})"
    more = sum(len(n) for _, n in unset) - len(names)
    raise UncalibratedModelError(
        f"model {model.name!r} has activation ranges that were never set, by calibration or by training: the first "
        f"is in {first}{f', and {more} more in later layers' if more else ''}. Its int8 "
        f"file would compute on their initial placeholder ranges, and representative_data cannot replace them (the "
        f"converter keeps the model's own ranges). Set them from data: keras_eff.calibrate(model, x) with a few "
        f"hundred typical inputs, or train the model (quantization-aware training sets them), then export again. "
        f"To export it anyway (to measure size or latency, say) pass allow_uncalibrated=True.",
        unset,
    )


def to_tflite(
    model,
    representative_data=None,
    int8_io: bool = True,
    *,
    quantize: bool = True,
    allow_float: bool = False,
    allow_uncalibrated: bool = False,
    max_samples: int = 256,
    batch_size: int | None = None,
) -> bytes:
    """Converts a Keras 3 model to a TFLite flatbuffer and returns its bytes.

    - ``quantize=False``: a float32 model; no data needed.
    - ``quantize=True`` on a model with fake-quant ranges (a QAT model): full int8 from those ranges; where
      ``representative_data`` is also given it fills only what the ranges leave open.
    - ``quantize=True`` on a float model: full int8 by post-training quantization, ``representative_data`` required.

    Every int8 file is checked: a float tensor or a QUANTIZE/DEQUANTIZE inside the graph raises ``FloatIslandError``
    naming the ops that compute in float and the layers they came from, unless ``allow_float``. A model whose own
    activation ranges were never set (a quantized model neither calibrated nor trained: its layers'
    ``unset_ranges()`` say so, see ``tflite_export.ranges``) is refused with ``UncalibratedModelError`` naming the
    first such layer, unless ``allow_uncalibrated``. The model is exported as a
    SavedModel to a temporary folder inside ``export_view``; it is not changed and nothing else is written.

    Args:
        model: A built Keras 3 model (it must have known inputs).
        representative_data: Typical inputs for post-training calibration: an array of shape
            ``(n, *input_shape)``, a list of arrays for several inputs, or a ``tf.data.Dataset`` (of inputs or of
            ``(x, y)`` pairs). Only used when ``quantize``.
        int8_io: With ``quantize``, make the model's input and output int8 too; otherwise they stay float32.
        quantize: Convert to full int8 (True) or to float32 (False).
        allow_float: Skip the float-island check of an int8 file.
        allow_uncalibrated: Export a quantized model whose activation ranges were never set, on its placeholder
            ranges (for size or latency measurements only).
        max_samples: The most samples of ``representative_data`` used.
        batch_size: A fixed batch size for every input (1 for microcontrollers and NPUs: no op that only serves a
            dynamic batch, such as a Flatten's SHAPE, STRIDED_SLICE and PACK, reaches the file); None keeps the
            batch axis dynamic.

    Returns:
        The TFLite flatbuffer, as bytes.

    Raises:
        TypeError: If ``model`` is not a Keras 3 model, or ``representative_data`` is not numeric.
        ValueError: If ``batch_size`` is not a positive integer or None; if ``representative_data`` is given with
            ``quantize=False``, is empty, holds NaN or infinite values, or does not match the model's inputs.
        UncalibratedModelError: If the model's activation ranges were never set and not ``allow_uncalibrated``.
        FloatIslandError: If the int8 file computes in float somewhere and not ``allow_float``; it names the ops
            that compute in float and the Keras layers they came from.
        TFLiteExportError: If the model has no known inputs or (with ``batch_size``) a free non-batch axis; if its
            layers hold quantization settings int8 TFLite cannot represent; if a float model is to be quantized
            without ``representative_data``; or if Keras' export or the converter fails (their message included).

    Example:
        ```python
        qat_bytes = tflite_export.to_tflite(qat_model)  # full int8 from the model's own ranges
        ptq_bytes = tflite_export.to_tflite(float_model, representative_data=x_train[:300], batch_size=1)
        float_bytes = tflite_export.to_tflite(float_model, quantize=False)
        ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_tflite expects a Keras 3 model, got {type(model).__name__}")
    signature = _input_signature(model, batch_size)
    rep = None
    if quantize:
        if not allow_uncalibrated:
            _check_ranges_set(model)
        problems = _export_problems(model)
        if problems:
            raise TFLiteExportError(
                "int8 TFLite cannot hold this model's quantization settings:\n  - " + "\n  - ".join(problems)
            )
        if representative_data is not None:
            rep = _as_input_arrays(model, representative_data, max_samples)
    elif representative_data is not None:
        raise ValueError("representative_data is only used for int8 export; drop it or set quantize=True")

    with tempfile.TemporaryDirectory(prefix="keras_eff_export_") as tmp:
        try:
            with _quiet_export(), export_view(model):
                _write_saved_model(model, tmp, signature)
        except Exception as err:  # the cause is the useful part; the converter would hide it
            raise TFLiteExportError(
                f"Keras could not export model {model.name!r} as a SavedModel: {type(err).__name__}: {err}"
            ) from err
        post_training = quantize and not _saved_model_has_fake_quant(tmp)  # the converter picks every range
        if post_training and rep is None:
            raise TFLiteExportError(
                f"model {model.name!r} is a float model (it carries no fake-quant ranges), so int8 export needs "
                f"representative_data (a few hundred typical inputs) to calibrate its ranges; or export it as "
                f"float with quantize=False, or quantize it first with keras_eff.quantize_model"
            )
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if rep is not None:
                names = [t.name for t in _model_inputs(model)]

                def gen():  # by input name: the converter feeds a list in its subgraph's order, not the model's
                    for i in range(len(rep[0])):
                        yield {n: a[i : i + 1] for n, a in zip(names, rep)} if len(rep) > 1 else [rep[0][i : i + 1]]

                converter.representative_dataset = gen
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        try:
            with warnings.catch_warnings():  # calibrating by input name, the converter opens a tf.lite.Interpreter
                warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
                data = converter.convert()
        except Exception as err:
            raise TFLiteExportError(
                f"the TFLite converter failed on model {model.name!r}: {type(err).__name__}: {err}"
            ) from err
    if not data:
        raise TFLiteExportError(
            f"the TFLite converter returned an empty file for model {model.name!r} (this "
            f"happens when a weight's shape is computed at run time)"
        )
    if quantize and not allow_float:
        try:
            check_int8(data, int8_io=int8_io, keras_model=model)
        except FloatIslandError as err:
            if not post_training or not any(op.bounded for op in err.float_ops):
                raise
            raise FloatIslandError(
                f"{err} These float ops are the converter's post-training quantization of a float model: "
                f"keras_eff.quantize_model (then keras_eff.calibrate) builds some layers the converter leaves "
                f"float, LayerNormalization among them, from ops with int8 kernels; export the model it returns.",
                err.problems,
                err.float_ops,
            ) from None
    return data
