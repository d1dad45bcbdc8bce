"""What the PTQ techniques share: finding the quantized layers of a model (nested models included), checking data,
caching layer inputs, running a quantized model as the float model it came from."""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

from ..data import model_samples
from ..graph import GraphInfo, functional_of, rebuild, tensors_in
from ..layers import facts_for
from ..quantization import QuantizeWrapper, WeightQuantizer, activation_quantizers, layer_ops


def _walk(model, path=()):
    """(wrapper, path) for every QuantizeWrapper with kernels in execution order, ``path`` the nested models (outer
    first) it lies in; each wrapper once."""
    seen = set()
    for node in GraphInfo.of(model).nodes:
        op = node.operation
        if isinstance(op, QuantizeWrapper):
            if op.has_kernel and id(op) not in seen:
                seen.add(id(op))
                yield op, path
        elif isinstance(op, keras.Model) and id(op) not in seen:
            seen.add(id(op))
            yield from _walk(op, path + (op,))


def quantized_layers(model, names=None) -> list:
    """The QuantizeWrappers with kernels, in execution order, those of nested models included (``names``: inner
    layer names to keep)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a quantized Keras model (keras_eff.quantize_model), got {type(model).__name__}")
    wrappers = [w for w, _ in _walk(model)]
    if not wrappers:
        raise ValueError(
            f"model {model.name!r} has no quantized conv or dense layers: quantize it first with "
            f"keras_eff.quantize_model"
        )
    if names is not None:
        known = {w.layer.name: w for w in wrappers}
        unknown = [n for n in names if n not in known and f"quant_{n}" not in known]
        if unknown:
            raise ValueError(
                f"no quantized layer named {unknown} in model {model.name!r}; its quantized layers are: "
                f"{', '.join(known)}"
            )
        wrappers = [w for w in wrappers if w.layer.name in names or w.name in names]
    return wrappers


def copy_quantized(model) -> keras.Model:
    """A copy of a quantized model that shares no variable with it: every wrapper and range copied from its config
    with its weights (ranges, BatchNorm statistics, frozen flags), the ranges placed again in the new graph
    (``QuantizeWrapper.after_rebuild``), stateless layers shared. What ``bias_correction`` and ``adaround`` change
    and return, so that the caller's model stays as it was."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a quantized Keras model (keras_eff.quantize_model), got {type(model).__name__}")
    return rebuild(model, name=model.name)


def check_data(model, data, what="data", max_samples=None) -> np.ndarray:
    """``data`` in any form ``keras_eff.data.model_samples`` takes (arrays, ``(x, y)``, tf.data, PyDataset,
    generators) as float32 inputs of ``model``, at most ``max_samples`` of them."""
    return model_samples(model, data, what, max_samples)


def _probe(model, layer):
    """A model from ``model``'s inputs to what ``layer`` (called once in it) receives."""
    fn = functional_of(model)
    return keras.Model(fn.inputs[0] if len(fn.inputs) == 1 else fn.inputs, tensors_in(fn, layer))


def layer_inputs(model, wrapper, x, batch_size=64) -> np.ndarray:
    """What ``wrapper`` receives when ``model`` runs on ``x`` (inference), also where it lies inside nested models:
    the outer model runs up to the nested model's input, the nested one from there to the wrapper."""
    path = next((p for w, p in _walk(model) if w is wrapper), None)
    if path is None:
        raise ValueError(f"layer {wrapper.name!r} is not a quantized layer of model {model.name!r}")
    return inputs_along(model, path, wrapper, x, batch_size)


def inputs_along(model, path, layer, x, batch_size=64) -> np.ndarray:
    """What ``layer`` receives when ``model`` runs on ``x`` (inference), ``path`` the nested models (outer first) it
    lies in: the outer model runs up to the first nested model's input, each nested one up to the next, the last to
    ``layer``."""
    stages, outer = [], model
    for inner in path:  # Keras calls a nested model once per graph (a second call would repeat its name)
        stages.append(_probe(outer, inner))
        outer = inner
    stages.append(_probe(outer, layer))
    out = []
    for i in range(0, len(x), batch_size):
        h = x[i : i + batch_size]
        for stage in stages:
            h = stage(h, training=False)
        out.append(np.asarray(h))
    return np.concatenate(out)


class _PassThrough(WeightQuantizer):
    """A weight quantizer that leaves the weights as they are (see ``quantizers_bypassed``)."""

    def __call__(self, w):
        return w


@contextlib.contextmanager
def quantizers_bypassed(model):
    """Within the block, ``model`` (quantized) computes as the float model it was made from: every
    ActivationQuantizer passes its input through (as during ``calibrate``, the ranges it sees are discarded) and every
    weight quantizer returns the weights unchanged. Everything is restored on leaving, errors included: ranges,
    quantizers and the model's outputs are as before. Eager calls only (what ``layer_inputs`` makes)."""
    acts = [(q, q.calibrating, q._calibration) for q in activation_quantizers(model)]
    holders = [
        (layer, layer.weight_quantizer)
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(getattr(layer, "weight_quantizer", None), WeightQuantizer)
    ]
    try:
        for q, _, _ in acts:
            q.calibrating, q._calibration = True, None
        for layer, wq in holders:
            layer.weight_quantizer = _PassThrough(wq.bits, wq.symmetric, wq.per_channel)
        yield model
    finally:
        for layer, wq in holders:
            layer.weight_quantizer = wq
        for q, calibrating, seen in acts:
            q.calibrating, q._calibration = calibrating, seen


@contextlib.contextmanager
def variables_set(pairs):
    """Within the block each variable of ``[(variable, value), ...]`` holds that value; its current value is put
    back after."""
    saved = [(v, np.asarray(v)) for v, _ in pairs]
    try:
        for v, value in pairs:
            v.assign(value)
        yield
    finally:
        for v, value in saved:
            v.assign(value)


def float_kernels(wrapper) -> dict:
    """Folded float kernels, in the layout ``quantized_kernels`` returns (Conv1D in its 2-D form)."""
    kernels, _ = wrapper.folded_kernels()
    qk, _ = wrapper.quantized_kernels()
    return {n: ops.reshape(k, qk[n].shape) for n, k in kernels.items()}


def pre_activation(wrapper, x, kernels, bias=None):
    y = layer_ops.linear(wrapper.layer, x, kernels)
    return y if bias is None else y + bias


def activation(wrapper, y):
    """The fused activations the wrapper applies after the bias (ReLU, ReLU6 or none)."""
    for name in (wrapper._own_fused, wrapper.fused_activation):
        if name == "relu":
            y = ops.relu(y)
        elif name == "relu6":
            y = ops.relu6(y)
    return y


def effective_activation(wrapper) -> str:
    names = {wrapper._own_fused, wrapper.fused_activation} - {"linear"}
    if "relu6" in names:
        return "relu6"
    return "relu" if names else "linear"


def bias_variable(wrapper):
    """The variable to shift to change the folded bias: the BatchNorm's β, or the layer's bias; None if neither."""
    if wrapper.batchnorm is not None:
        return wrapper.batchnorm.beta if wrapper.batchnorm.center else None
    return wrapper.layer.bias if wrapper.layer.use_bias else None


def supported_reason(wrapper) -> str | None:
    """Why AdaRound and bias correction leave a quantized layer alone (None: they handle it). Both work on one
    kernel whose output channels lie on its last axis (or a depthwise kernel): from the registry, not a separable
    convolution (two kernels) nor a transposed one (output channels on axis -2), nor a layer called several times
    (fitted to one call, its kernel would serve the others worse)."""
    layouts = list(facts_for(wrapper.layer).kernels.values())
    if len(layouts) != 1 or layouts[0] not in ("last", "depthwise"):
        return f"{type(wrapper.layer).__name__} is not handled"
    if getattr(wrapper, "layer_calls", 1) > 1:
        return f"the layer is called {wrapper.layer_calls} times: its one kernel and bias serve every call"
    return None
