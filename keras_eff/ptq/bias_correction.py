"""Bias correction (Nagel et al. 2019): quantizing weights shifts the mean of a layer's output; subtract the shift.

With W̃ = W + ε, the output error is ε·x, whose expectation E[ε·x] = ε·E[x] moves every output channel's mean.
Empirical: measure the mean of (W̃ − W)·x on data, layer after layer (each layer sees the inputs the corrected layers
before it give). Analytical, without data: E[x] per input channel from the BatchNorm statistics of the layer in
front — its pre-activation is N(β, γ²), and E[ReLU(h)] = σ·φ(μ/σ) + μ·Φ(μ/σ) (ReLU6: minus the same above 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from keras import layers
from tqdm.auto import tqdm

from ..graph import GraphInfo
from ..quantization import QuantizeWrapper
from . import common
from . import layer_math as lm
from .params import BiasCorrectionParams

# Layers that keep the mean of each channel (the expectation the analytical correction needs passes through). Kept
# here, not read from the registry: its channels="pass" / output_range="inherit" also cover max pooling, padding and
# cropping, which change a channel's mean; "keeps the mean" is this technique's own condition.
_PASS = (layers.Dropout, layers.Identity, layers.SpatialDropout2D, layers.GlobalAveragePooling2D,
         layers.AveragePooling2D)


@dataclass
class BiasCorrectionReport:
    method: str = ""
    corrected: dict = field(default_factory=dict)  # layer -> per-channel shift applied to the bias
    skipped: list = field(default_factory=list)  # (layer, reason)

    def __str__(self):
        lines = [f"{self.method} bias correction of {len(self.corrected)} layers"]
        lines += [f"  {name}: mean |shift| {np.mean(np.abs(v)):.3g}" for name, v in self.corrected.items()]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _norm_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _norm_cdf(z):
    return 0.5 * (1.0 + _erf(np.asarray(z, np.float64) / math.sqrt(2.0)))


def relu_mean(mean, std):
    """E[max(h, 0)] for h ~ N(mean, std²), per channel."""
    std = np.maximum(np.asarray(std, np.float64), 1e-12)
    z = np.asarray(mean, np.float64) / std
    return std * _norm_pdf(z) + mean * _norm_cdf(z)


def expected_activation(mean, std, kind: str):
    if kind == "relu":
        return relu_mean(mean, std)
    if kind == "relu6":
        return relu_mean(mean, std) - relu_mean(np.asarray(mean) - 6.0, std)
    return np.asarray(mean, np.float64)


def _apply(wrapper, shift):
    var = common.bias_variable(wrapper)
    var.assign(np.asarray(var) + shift.astype(np.float32))


def _empirical(model, x, params, report, wrappers):
    for w in tqdm(wrappers, desc="bias correction", leave=False):
        xs = common.layer_inputs(model, w, x, params.batch_size)
        qk, _ = w.quantized_kernels()
        fk = common.float_kernels(w)
        total, count = 0.0, 0
        for i in range(0, len(xs), params.batch_size):
            xb = xs[i:i + params.batch_size]
            err = np.asarray(common.pre_activation(w, xb, qk)) - np.asarray(common.pre_activation(w, xb, fk))
            total = total + err.reshape(-1, err.shape[-1]).sum(axis=0)
            count += int(np.prod(err.shape[:-1]))
        shift = -total / count
        _apply(w, shift)
        report.corrected[w.layer.name] = shift.tolist()


def _producer(info, wrapper):
    """The quantized layer whose output ``wrapper`` reads (through dropout-like layers), or None."""
    by_layer = {id(n.operation): n for n in info.nodes}
    node = by_layer.get(id(wrapper))
    while node is not None:
        tensor = node.input_tensors[0] if len(node.input_tensors) == 1 else None
        if tensor is None:
            return None
        src = tensor._keras_history.operation
        if isinstance(src, QuantizeWrapper) and src.has_kernel:
            return src
        inner = src.layer if isinstance(src, QuantizeWrapper) else src
        if not isinstance(inner, _PASS):
            return None
        node = by_layer.get(id(src))
    return None


def _statistics_of(wrapper, statistics):
    if wrapper.batchnorm is not None:
        bn = wrapper.batchnorm
        gamma = np.asarray(bn.gamma) if bn.scale else np.ones(bn.moving_mean.shape)
        beta = np.asarray(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
        return beta.astype(np.float64), np.abs(gamma).astype(np.float64)
    s = statistics.get(wrapper.layer.name)
    if s is None:
        return None
    return np.asarray(s["mean"], np.float64), np.asarray(s["std"], np.float64)


def _analytical(model, statistics, report, wrappers):
    info = GraphInfo.of(model)
    shifts = {}
    for w in wrappers:
        name = w.layer.name
        if not lm.is_scalable(w.layer):
            report.skipped.append((name, f"analytical correction handles Conv2D, DepthwiseConv2D and Dense, not "
                                         f"{type(w.layer).__name__}"))
            continue
        src = _producer(info, w)
        stats = None if src is None else _statistics_of(src, statistics)
        if stats is None:
            report.skipped.append((name, "no BatchNorm statistics for its input (give data for empirical "
                                         "correction)"))
            continue
        ex = expected_activation(*stats, common.effective_activation(src))
        qk, _ = w.quantized_kernels()
        fk = common.float_kernels(w)
        eps = np.asarray(qk["kernel"], np.float64) - np.asarray(fk["kernel"], np.float64)
        shifts[w] = -lm.input_sum(w.layer, eps.reshape(w.layer.kernel.shape), ex)
    for w, shift in shifts.items():  # after all, since shifting β changes the statistics read above
        _apply(w, shift)
        report.corrected[w.layer.name] = shift.tolist()


def bias_correction(quantized_model, data=None, params: BiasCorrectionParams | None = None, *, statistics=None,
                    **kwargs):
    """Corrects the biases of a quantized model (from ``keras_eff.quantize_model``) **in place** and returns it.

    data: inputs for the empirical correction. Without data the correction is analytical: it needs the pre-activation
    statistics of each layer's input, read from a BatchNorm still inside the QuantizeWrapper in front, or from
    ``statistics`` (``equalize(...).equalization.statistics``, or the EqualizationReport itself). The report of what
    was done is set as ``quantized_model.bias_correction``.
    """
    if params is None:
        params = BiasCorrectionParams(**kwargs)
    elif kwargs:
        raise TypeError("give either params or keyword settings, not both")
    wrappers = common.quantized_layers(quantized_model, params.layers)
    report = BiasCorrectionReport()
    usable = []
    for w in wrappers:
        reason = common.supported_reason(w)
        if reason is None and common.bias_variable(w) is None:
            reason = "the layer has no bias (build it with use_bias=True, or equalize the model first)"
        if reason:
            report.skipped.append((w.layer.name, reason))
        else:
            usable.append(w)
    if data is not None:
        x = common.check_data(quantized_model, data, "bias correction data", params.max_samples)
        report.method = "empirical"
        _empirical(quantized_model, x, params, report, usable)
    else:
        if statistics is not None and hasattr(statistics, "statistics"):
            statistics = statistics.statistics
        statistics = statistics or {}
        if not statistics and not any(w.batchnorm is not None for w in wrappers):
            raise ValueError("bias_correction without data needs BatchNorm statistics: pass "
                             "statistics=equalized_model.equalization (from keras_eff.ptq.equalize), quantize a "
                             "model whose BatchNorms are still there, or give data for the empirical correction")
        report.method = "analytical"
        _analytical(quantized_model, statistics, report, usable)
    quantized_model.bias_correction = report
    return quantized_model
