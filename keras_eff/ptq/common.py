"""What the PTQ techniques share: finding the quantized layers of a model, checking data, caching layer inputs."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..data import model_samples
from ..graph import GraphInfo
from ..graph import tensors_in
from ..layers import facts_for
from ..quantization import QuantizeWrapper


def quantized_layers(model, names=None) -> list:
    """The top-level QuantizeWrappers with kernels, in execution order (``names``: inner layer names to keep)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a quantized Keras model (keras_eff.quantize_model), got {type(model).__name__}")
    wrappers = [n.operation for n in GraphInfo.of(model).nodes
                if isinstance(n.operation, QuantizeWrapper) and n.operation.has_kernel]
    if not wrappers:
        raise ValueError(f"model {model.name!r} has no quantized conv or dense layers: quantize it first with "
                         f"keras_eff.quantize_model")
    if names is not None:
        known = {w.layer.name: w for w in wrappers}
        unknown = [n for n in names if n not in known and f"quant_{n}" not in known]
        if unknown:
            raise ValueError(f"no quantized layer named {unknown} in model {model.name!r}; its quantized layers are: "
                             f"{', '.join(known)}")
        wrappers = [w for w in wrappers if w.layer.name in names or w.name in names]
    return wrappers


def check_data(model, data, what="data", max_samples=None) -> np.ndarray:
    """``data`` in any form ``keras_eff.data.model_samples`` takes (arrays, ``(x, y)``, tf.data, PyDataset,
    generators) as float32 inputs of ``model``, at most ``max_samples`` of them."""
    return model_samples(model, data, what, max_samples)


def layer_inputs(model, wrapper, x, batch_size=64) -> np.ndarray:
    """What ``wrapper`` receives when ``model`` runs on ``x`` (inference)."""
    probe = keras.Model(model.input, tensors_in(model, wrapper))
    return np.concatenate([np.asarray(probe(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def float_kernels(wrapper) -> dict:
    """Folded float kernels, in the layout ``quantized_kernels`` returns (Conv1D in its 2-D form)."""
    kernels, _ = wrapper.folded_kernels()
    qk, _ = wrapper.quantized_kernels()
    return {n: ops.reshape(k, qk[n].shape) for n, k in kernels.items()}


def pre_activation(wrapper, x, kernels, bias=None):
    from ..quantization import layer_ops

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
    convolution (two kernels) nor a transposed one (output channels on axis -2)."""
    layouts = list(facts_for(wrapper.layer).kernels.values())
    if len(layouts) != 1 or layouts[0] not in ("last", "depthwise"):
        return f"{type(wrapper.layer).__name__} is not handled"
    return None
