"""AdaRound (Nagel et al. 2020): learn, per weight, whether to round down or up, layer by layer.

For a layer with float kernel W on the grid of step s (the WeightQuantizer's: s = max|w|/(2^(b−1)−1) per channel or
per tensor, symmetric narrow range), the soft kernel is W̃ = s·clip(⌊W/s⌋ + h(V), −n, n) with the rectified sigmoid
h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1). V is learned with Adam to minimize ‖f(W̃x + b) − f(Wx + b)‖² on cached inputs x
of the layer (as the quantized model before it computes them), plus λ·Σ(1 − |2h(V) − 1|^β), which pushes h to 0 or 1
as β is annealed from 20 to 2 after a warm start without it. The result is ⌊W/s⌋ + [V ≥ 0], times s: a kernel exactly
on the grid, which the WeightQuantizer maps to itself and the int8 TFLite file stores as those integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..layers import main_kernel
from ..options import resolve_config
from ..quantization import WeightQuantizer, layer_ops
from ..quantization.report import traced_from
from ..reporting import attach_report
from . import common
from .config import AdaRoundConfig


@dataclass
class AdaRoundReport:
    """What `adaround` did: ``keras_eff.get_report(rounded, "adaround")``.

    ``str(report)`` gives one line per layer: bits, reconstruction error before and after, share of weights flipped.

    Attributes:
        layers: ``{layer name: {...}}`` with the keys ``bits``, ``per_channel``, ``mse_nearest`` and
            ``mse_adaround`` (the reconstruction error of nearest rounding and of AdaRound on the cached inputs),
            ``flipped`` (the share of weights rounded the other way from nearest), ``curve`` (sampled
            ``(iteration, reconstruction, regularizer, total loss)``) and ``warm_start`` (the first regularized
            iteration).
        skipped: ``(layer name, reason)`` for each quantized layer left alone.
    """

    layers: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def __str__(self):
        lines = [f"AdaRound of {len(self.layers)} layers"]
        for name, r in self.layers.items():
            lines.append(
                f"  {name}: {r['bits']}-bit, reconstruction MSE {r['mse_nearest']:.4g} (nearest) -> "
                f"{r['mse_adaround']:.4g}, {100 * r['flipped']:.1f}% rounded the other way"
            )
        lines += [f"  skipped {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def _rectified_sigmoid(v, zeta, gamma):
    return tf.clip_by_value(tf.sigmoid(v) * (zeta - gamma) + gamma, 0.0, 1.0)


def _inverse_rectified_sigmoid(h, zeta, gamma):
    h = np.clip(h, 1e-4, 1 - 1e-4)
    p = (h - gamma) / (zeta - gamma)
    return -np.log(1.0 / p - 1.0)


def grid_of(wrapper, kernel_cl):
    """The weight grid of a quantized layer: the step and the largest integer.

    Args:
        wrapper: A `QuantizeWrapper` with symmetric weights of 2 to 8 bits.
        kernel_cl: Its kernel, channels last (output channels on the last axis).

    Returns:
        ``(scale, n)``: the step, broadcastable against ``kernel_cl``, and 2^(bits−1) − 1.

    Raises:
        ValueError: If the weights are asymmetric or wider than 8 bits.
    """
    wq = wrapper.weight_quantizer
    if not (wq.symmetric and wq.bits <= 8):
        raise ValueError(f"layer {wrapper.layer.name!r}: AdaRound needs symmetric weights of 2–8 bits, got {wq!r}")
    scale = np.asarray(wq.scale(tf.constant(kernel_cl, tf.float32)), np.float32)
    return scale, 2 ** (wq.bits - 1) - 1


def snap_to_grid(wrapper, kernel_cl):
    """Puts a kernel exactly on a quantized layer's weight grid, as its `WeightQuantizer` computes it.

    Args:
        wrapper: A `QuantizeWrapper`.
        kernel_cl: A kernel on (or next to) the grid, channels last.

    Returns:
        The float32 kernel the wrapper's weight quantizer maps to itself.
    """
    k = tf.constant(kernel_cl, tf.float32)
    for _ in range(50):  # the op recomputes its range from the values: a few rounds reach a fixed point
        nxt = wrapper.weight_quantizer(k)
        if np.array_equal(np.asarray(nxt), np.asarray(k)):
            break
        k = nxt
    return np.asarray(k)


def _set_bits(wrapper, bits):
    wq = wrapper.weight_quantizer
    wrapper.weight_bits = bits
    wrapper.weight_quantizer = WeightQuantizer(bits, wq.symmetric, wq.per_channel)


def _optimize(wrapper, xs, params, rng, bar, xf=None):
    layer = wrapper.layer
    name = main_kernel(layer)
    fk = common.float_kernels(wrapper)
    shape4 = tuple(fk[name].shape)
    w_cl = np.asarray(layer_ops.to_channels_last(layer, name, fk[name]), np.float32)
    scale, n = grid_of(wrapper, w_cl)
    _, bias = wrapper.folded_kernels()
    bias = None if bias is None else tf.constant(np.asarray(bias), tf.float32)
    ratio = w_cl / scale
    floor = np.floor(ratio)
    # the largest weights of each channel define the grid: they keep their nearest value so the scale stays put
    pinned = np.abs(np.round(ratio)) >= n
    rest = ratio - floor
    v = tf.Variable(_inverse_rectified_sigmoid(rest, params.zeta, params.gamma).astype(np.float32))
    floor_t = tf.constant(floor.astype(np.float32))
    nearest_t = tf.constant(np.clip(np.round(ratio), -n, n).astype(np.float32))
    pinned_t = tf.constant(pinned)
    scale_t = tf.constant(scale)
    zeta, gamma = params.zeta, params.gamma

    def kernel_from(h):
        ints = tf.where(pinned_t, nearest_t, tf.clip_by_value(floor_t + h, -n, n))
        k = layer_ops.from_channels_last(layer, name, ints * scale_t, shape4)
        return k

    def output(x, k):
        y = layer_ops.linear(layer, x, {name: k})
        return common.activation(wrapper, y if bias is None else y + bias)

    target_k = tf.constant(np.asarray(fk[name]), tf.float32)
    # Adam, written out: a handful of lines, and no optimizer state tied to Keras variables
    m1, m2, t = tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v)), tf.Variable(0.0)
    lr, b1, b2 = params.learning_rate, 0.9, 0.999

    def adam(grad):
        t.assign_add(1.0)
        m1.assign(b1 * m1 + (1 - b1) * grad)
        m2.assign(b2 * m2 + (1 - b2) * tf.square(grad))
        v.assign_sub(lr * (m1 / (1 - b1**t)) / (tf.sqrt(m2 / (1 - b2**t)) + 1e-8))

    # targets: the float layer on the float model's inputs (asymmetric reconstruction) or on the quantized inputs
    xf = xs if xf is None else xf

    @tf.function
    def step(x, x_float, beta, reg_on):
        target = output(x_float, target_k)
        with tf.GradientTape() as tape:
            h = _rectified_sigmoid(v, zeta, gamma)
            y = output(x, kernel_from(h))
            recon = tf.reduce_mean(tf.reduce_sum(tf.reshape(tf.square(y - target), (-1, tf.shape(y)[-1])), axis=-1))
            free = tf.cast(tf.logical_not(pinned_t), tf.float32)
            reg = tf.reduce_sum(free * (1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta)))
            loss = recon + reg_on * params.reg_weight * reg
        adam(tape.gradient(loss, v))
        return recon, reg, loss

    @tf.function
    def hard_error(x, x_float, k):
        d = output(x, k) - output(x_float, target_k)
        return tf.reduce_mean(tf.reduce_sum(tf.reshape(tf.square(d), (-1, tf.shape(d)[-1])), axis=-1))

    def mse(k):
        errs = [float(hard_error(xs[i : i + 256], xf[i : i + 256], k)) for i in range(0, len(xs), 256)]
        return float(np.mean(errs))

    nearest_k = layer_ops.from_channels_last(layer, name, nearest_t * scale_t, shape4)
    mse_nearest = mse(nearest_k)
    warm = int(params.warm_start * params.iterations)
    curve = []
    for it in range(params.iterations):
        idx = rng.choice(len(xs), size=min(params.batch_size, len(xs)), replace=False)
        if it < warm:
            beta, reg_on = params.beta_start, 0.0
        else:
            progress = (it - warm) / max(1, params.iterations - warm)
            beta, reg_on = params.beta_start + (params.beta_end - params.beta_start) * progress, 1.0
        recon, reg, loss = step(
            tf.constant(xs[idx]), tf.constant(xf[idx]), tf.constant(beta, tf.float32), tf.constant(reg_on, tf.float32)
        )
        if it % max(1, params.iterations // 50) == 0 or it == params.iterations - 1:
            curve.append((it, float(recon), float(reg), float(loss)))
        bar.update(1)
    hard = np.where(pinned, np.clip(np.round(ratio), -n, n), np.clip(floor + (np.asarray(v) >= 0), -n, n)).astype(
        np.float32
    )
    new_cl = snap_to_grid(wrapper, hard * scale)
    final_k = np.asarray(layer_ops.from_channels_last(layer, name, tf.constant(new_cl), shape4))
    mse_ada = mse(tf.constant(final_k))
    flipped = float(np.mean(hard != np.clip(np.round(ratio), -n, n)))
    return final_k, dict(
        bits=wrapper.weight_quantizer.bits,
        mse_nearest=mse_nearest,
        mse_adaround=mse_ada,
        flipped=flipped,
        curve=curve,
        warm_start=warm,
        per_channel=wrapper.weight_quantizer.per_channel,
    )


def _float_targets(model, wrapper, x, xs, originals):
    """What ``wrapper`` receives in the float model ``model`` was quantized from: ``model`` run with its quantizers
    bypassed and every kernel AdaRound has rounded so far back at its float value (the asymmetric reconstruction
    target). ``xs`` are its quantized inputs (unused here: the targets of the older, weaker default)."""
    with common.quantizers_bypassed(model), common.variables_set(originals):
        return common.layer_inputs(model, wrapper, x)


def _nesting(model, name):
    """``[model, nested model, ..., layer]``: the models from ``model`` down to its layer called ``name`` (one at the
    top level first), or None when it has none."""
    for layer in model.layers:
        if layer.name == name:
            return [model, layer]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            chain = _nesting(layer, name)
            if chain is not None:
                return [model, *chain]
    return None


def _float_inputs(float_model, wrapper, x, batch_size=64):
    """The input of the float model's layer of the same name (what the quantized layer would see without
    quantization), for the asymmetric reconstruction target. A layer inside nested models is reached model by model:
    each nested model's input from the model around it, then the layer's input inside it. None when that layer is
    not the one quantized (a LayerNormalization or standalone BatchNorm whose scale ``quantize_model`` runs as a
    depthwise convolution of the same name), or not a layer of the float model's graph (the copy of a sublayer of a
    custom layer ``quantize_model`` traced): the caller then computes the targets from the quantized model with its
    quantizers bypassed."""
    chain = _nesting(float_model, wrapper.layer.name)
    if chain is None and traced_from(wrapper):
        return None  # a copy of a sublayer of a traced custom layer: the float model holds it inside that layer
    if chain is None:
        raise ValueError(
            f"float_model {float_model.name!r} has no layer named {wrapper.layer.name!r}: give the "
            f"float model that was quantized (after equalize / fold_batchnorm), or leave float_model "
            f"out"
        )
    if type(chain[-1]) is not type(wrapper.layer):
        return None
    return common.inputs_along(float_model, chain[1:-1], chain[-1], x, batch_size)


def adaround(quantized_model, data, config: AdaRoundConfig | dict | None = None, *, float_model=None, **kwargs):
    """Makes a copy of a quantized model whose kernels are rounded up or down as learned per weight (AdaRound,
    Nagel et al. 2020), layer by layer.

    Each layer is fed what the quantized model gives it and fitted to the output the float model gives (the paper's
    asymmetric reconstruction), so it also makes up for the error of the layers before it. The float model's inputs
    come from ``quantized_model`` itself, run with its quantizers bypassed and its float kernels; ``float_model``
    gives them instead, for a model whose float version differs. Layers inside nested models are rounded too.
    Afterwards each kernel lies exactly on its quantization grid, so the int8 TFLite file holds exactly these
    integers; calibrate the activation ranges again for the new weights. The report (`AdaRoundReport`) is
    ``keras_eff.get_report(new_model, "adaround")``.

    Args:
        quantized_model: A model made by ``keras_eff.quantize_model``, calibrated, from a model without BatchNorm
            to fold (run ``keras_eff.ptq.equalize`` or ``keras_eff.graph.fold_batchnorm`` first). Not changed.
        data: Typical inputs, in any form ``keras_eff.calibrate`` takes (array, ``(x, y)``, ``tf.data.Dataset``,
            ``PyDataset``, generator); at most ``max_samples`` are read.
        config: An `AdaRoundConfig` or a dict of its fields; default ``AdaRoundConfig()``.
        float_model: The float model that was quantized (after equalize / fold_batchnorm), to compute the float
            targets from; None (default): ``quantized_model`` with its quantizers bypassed. It must hold layers of
            the same names, at the top level or inside nested models. A layer whose float counterpart is of another
            class (the depthwise convolution ``quantize_model`` makes of a LayerNormalization's γ and β), or that
            is a sublayer of a custom layer ``quantize_model`` traced (``<block>_<sublayer>``), takes the default
            targets.
        **kwargs: Fields of `AdaRoundConfig` (``iterations=500``, ``weight_bits=4``, ...), each overriding
            ``config``'s.

    Returns:
        A new Keras model: a copy of ``quantized_model`` (wrappers, ranges and their placement) with the rounded
        kernels (and, with ``weight_bits``, its wrappers at that width).

    Raises:
        ValueError: If no layer can be rounded (the message gives each layer's reason: a BatchNorm folded inside,
            asymmetric or wider than 8-bit weights, an unsupported layer class), ``layers`` names a layer the model
            lacks, ``data`` does not match the model's input or holds NaN or infinite values, or ``float_model``
            lacks a layer.
        TypeError: If ``quantized_model`` is not a Keras model, or a keyword is not a field of `AdaRoundConfig`.

    Example:
        ```python
        q4 = keras_eff.quantize_model(keras_eff.ptq.equalize(model), keras_eff.QuantConfig(weight_bits=4))
        keras_eff.calibrate(q4, x_cal)
        rounded = keras_eff.ptq.adaround(q4, x_cal, iterations=1000)
        keras_eff.calibrate(rounded, x_cal)  # the ranges again, for the new weights
        ```
    """
    params = resolve_config(AdaRoundConfig, config, kwargs, "adaround")
    x = common.check_data(quantized_model, data, "AdaRound data", params.max_samples)
    common.quantized_layers(quantized_model, params.layers)  # refused before the copy
    new = common.copy_quantized(quantized_model)
    wrappers = common.quantized_layers(new, params.layers)
    report = AdaRoundReport()
    todo = []
    for w in wrappers:
        reason = common.supported_reason(w)
        if reason is None and w.batchnorm is not None and traced_from(w):
            reason = (
                f"a BatchNorm is folded inside the quantized layer, so its kernel is not the exported one; both sit "
                f"in custom layer {traced_from(w)!r}, where keras_eff.graph.fold_batchnorm does not reach: fold the "
                f"BatchNorm into the conv in that layer's own code"
            )
        elif reason is None and w.batchnorm is not None:
            reason = (
                "a BatchNorm is folded inside the quantized layer, so its kernel is not the exported one: "
                "fold BatchNorm before quantize_model (keras_eff.ptq.equalize or keras_eff.graph.fold_batchnorm)"
            )
        if reason is None and not (w.weight_symmetric and (params.weight_bits or w.weight_bits) <= 8):
            reason = f"weights must be symmetric with at most 8 bits (got {w.weight_quantizer!r})"
        if reason:
            report.skipped.append((w.layer.name, reason))
        else:
            todo.append(w)
    if not todo:
        raise ValueError(
            f"AdaRound found no layer it can handle in model {quantized_model.name!r}: "
            + "; ".join(f"{n}: {r}" for n, r in report.skipped)
        )
    rng = np.random.default_rng(params.seed)
    originals = [(w.layer.kernel, np.asarray(w.layer.kernel)) for w in todo]  # float kernels, for the targets
    with tqdm(total=len(todo) * params.iterations, desc="AdaRound", unit="it", leave=False) as bar:
        for w in todo:
            bar.set_postfix_str(w.layer.name)
            if params.weight_bits is not None:
                _set_bits(w, params.weight_bits)
            xs = common.layer_inputs(new, w, x)
            xf = None if float_model is None else _float_inputs(float_model, w, x)
            if xf is None:
                xf = _float_targets(new, w, x, xs, originals)
            kernel, info = _optimize(w, xs, params, rng, bar, xf)
            w.layer.kernel.assign(kernel.reshape(w.layer.kernel.shape))
            report.layers[w.layer.name] = info
    attach_report(new, "adaround", report)
    return new
