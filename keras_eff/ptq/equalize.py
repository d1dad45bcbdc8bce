"""Data-free quantization (Nagel et al. 2019): BatchNorm folding, cross-layer equalization, high-bias absorption.

Cross-layer scaling: for consecutive layers W1 → ReLU → W2, dividing output channel i of W1 (and its bias) by s_i
and multiplying input channel i of W2 by s_i leaves the function unchanged (ReLU is positively homogeneous). With
s_i = sqrt(r1_i·r2_i)/r2_i, where r1_i and r2_i are the channel's weight ranges in W1 and W2, both become
sqrt(r1_i·r2_i): the channel ranges even out, so per-tensor grids lose less. Sweeps over all pairs repeat until the
scales settle. High-bias absorption then moves c_i = max(0, β_i − 3γ_i) (from the folded BatchNorm's β, γ: the
pre-activation mean and standard deviation) out of W1's bias into W2's bias, shrinking activation ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from ..checks import check_finite_weights
from ..graph import GraphInfo, activation_kind, clone_layer, fold_batchnorm, functional_of, is_foldable_bn, rebuild
from ..layers import facts_for
from ..options import resolve_config
from ..reporting import attach_report
from . import layer_math as lm
from .config import EqualizeConfig


def _passes_scale(op) -> bool:
    """Whether ``op``, between a pair, commutes with positive per-channel scaling (and with a constant shift): from
    the registry, a channel-by-channel layer (``channels="pass"``) whose output lies on its input's grid
    (``output_range`` "inherit": max pooling, padding, cropping, dropout, identity, upsampling) or shares it
    (``"shared"``: average pooling): every output value is one input value of its channel, or a mean of some."""
    facts = facts_for(op)
    return facts.channels == "pass" and facts.output_range in ("inherit", "shared")


def _breaks_shift(op) -> bool:
    """Zero padding commutes with scaling but not with a constant shift (the padded zeros do not move). A
    PTQ-specific condition, not a registry fact: for int8 TFLite padding is just another 'inherit' layer."""
    return isinstance(op, (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D))


@dataclass
class EqualizationReport:
    """What `equalize` did: ``keras_eff.get_report(equalized, "equalization")``.

    ``str(report)`` gives the counts, the ReLU6 layers replaced and the pairs left unscaled.

    Attributes:
        pairs: ``(first layer, second layer, activation between)`` for each pair scaled.
        iterations: The scaling sweeps run.
        relu6_replaced: Names of the ReLU6 layers (or layers with their own ReLU6) turned into ReLU.
        skipped_pairs: ``(first layer, second layer, reason)`` for each pair left unscaled.
        absorbed: ``{layer name: total shift moved out of its bias}`` by high-bias absorption.
        folded_batchnorm: ``(layer name, BatchNorm name)`` for each BatchNorm folded, nested models included.
        statistics: ``{layer name: {"mean": [...], "std": [...]}}``: the pre-activation mean and standard deviation
            per output channel, from the folded BatchNorms, carried through scaling and absorption; what the
            data-free `bias_correction` reads.
        ranges_before: ``{layer name: [max|w| per output channel]}`` after folding, before scaling.
        ranges_after: The same after scaling.
    """

    pairs: list = field(default_factory=list)
    iterations: int = 0
    relu6_replaced: list = field(default_factory=list)
    skipped_pairs: list = field(default_factory=list)
    absorbed: dict = field(default_factory=dict)
    folded_batchnorm: list = field(default_factory=list)
    statistics: dict = field(default_factory=dict)
    ranges_before: dict = field(default_factory=dict)
    ranges_after: dict = field(default_factory=dict)

    def __str__(self):
        summary = (
            f"{len(self.folded_batchnorm)} BatchNorms folded, {len(self.pairs)} layer pairs equalized in "
            f"{self.iterations} sweeps, bias absorbed into {len(self.absorbed)} layers"
        )
        lines = [summary]
        if self.relu6_replaced:
            lines.append(f"  ReLU6 replaced by ReLU: {', '.join(self.relu6_replaced)}")
        lines += [f"  not scaled: {a} -> {b} ({why})" for a, b, why in self.skipped_pairs]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The report as JSON-ready types.

        Returns:
            A dict with one key per attribute, tuples as lists.
        """
        return {
            "pairs": [list(p) for p in self.pairs],
            "iterations": self.iterations,
            "relu6_replaced": list(self.relu6_replaced),
            "skipped_pairs": [list(p) for p in self.skipped_pairs],
            "absorbed": self.absorbed,
            "folded_batchnorm": list(self.folded_batchnorm),
            "statistics": self.statistics,
            "ranges_before": self.ranges_before,
            "ranges_after": self.ranges_after,
        }


def _own_activation(layer) -> str | None:
    name = keras.activations.serialize(layer.activation)
    return name if name in ("relu", "relu6", "linear") else None


@dataclass
class _Pair:
    first: str
    second: str
    activation: str  # relu, relu6, linear (the effective activation between)
    relu6_layers: list  # names of ReLU6 layers (or the first layer's own relu6) to turn into ReLU
    shift_ok: bool  # high-bias absorption is exact here


def _find_pairs(model, params, report) -> list:
    info = GraphInfo.of(model)
    pairs = []
    for node in info.nodes:
        first = node.operation
        if not isinstance(first, layers.Layer) or not lm.is_scalable(first) or info.calls(first) != 1:
            continue  # (a layer called several times shares its weights between calls: scaling one scales all)
        act = _own_activation(first)
        if act is None:
            continue
        relu6 = [first.name] if act == "relu6" else []
        shift_ok, cur = True, node
        while True:
            nxt = info.sole_consumer(cur)
            if nxt is None or not isinstance(nxt.operation, layers.Layer):
                break
            op = nxt.operation
            if info.calls(op) != 1:
                if lm.is_scalable(op):
                    report.skipped_pairs.append((first.name, op.name, f"{op.name} is called {info.calls(op)} times"))
                break
            kind = activation_kind(op)
            if kind is not None and kind != "linear":
                if act != "linear":
                    break  # two activations in a row: leave it alone
                act = kind
                if kind == "relu6":
                    relu6.append(op.name)
            elif kind == "linear" or _passes_scale(op):
                shift_ok = shift_ok and not _breaks_shift(op)
            elif lm.is_scalable(op):
                if relu6 and not params.relu6_to_relu:
                    report.skipped_pairs.append((first.name, op.name, "ReLU6 between (relu6_to_relu=False)"))
                else:
                    pairs.append(
                        _Pair(
                            first.name,
                            op.name,
                            "relu" if act == "relu6" else act,
                            relu6,
                            shift_ok and lm.padding_free(op),
                        )
                    )
                break
            else:
                break
            cur = nxt
    return pairs


def _bn_statistics(model, stats=None) -> dict:
    """Per layer followed by a foldable BatchNorm (what ``fold_batchnorm`` folds, nested models included):
    (BN name, β, |γ|), β and |γ| the mean and std of the BN output, per channel."""
    info = GraphInfo.of(model)
    stats = {} if stats is None else stats
    for node in info.nodes:
        if isinstance(node.operation, keras.Model):
            _bn_statistics(node.operation, stats)
            continue
        nxt = info.sole_consumer(node)
        if nxt is not None and is_foldable_bn(nxt.operation, node.operation):
            bn = nxt.operation
            gamma = np.asarray(bn.gamma) if bn.scale else np.ones(bn.moving_mean.shape)
            beta = np.asarray(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
            stats[node.operation.name] = (bn.name, beta.astype(np.float64), np.abs(gamma).astype(np.float64))
    return stats


def equalize(model, config: EqualizeConfig | dict | None = None, **kwargs) -> keras.Model:
    """Makes a copy of a float model that quantizes better per tensor: BatchNorm folded, cross-layer scaling and
    high-bias absorption (data-free quantization, Nagel et al. 2019).

    BatchNorms are folded everywhere (nested models included); consecutive Conv2D / DepthwiseConv2D (multiplier 1) /
    Dense pairs of the top-level graph, through ReLU, pooling, dropout and padding, are scaled until their
    per-channel weight ranges even out, then part of each bias moves into the next layer where that is exact. The
    report (`EqualizationReport`: the pairs, the ReLU6 layers replaced by ReLU, the BatchNorm statistics the
    data-free `bias_correction` reads) is ``keras_eff.get_report(new_model, "equalization")``.

    Args:
        model: A float Functional or Sequential Keras model (built). Not changed.
        config: An `EqualizeConfig` or a dict of its fields; default ``EqualizeConfig()``.
        **kwargs: Fields of `EqualizeConfig` (``absorb_bias=False``, ...), each overriding ``config``'s.

    Returns:
        A new Keras model computing the same function (up to float rounding; a ReLU6 between scaled layers becomes
        ReLU).

    Raises:
        TypeError: If ``model`` is not a Keras model, a keyword is not a field of `EqualizeConfig`, or ``config``
            is neither an `EqualizeConfig` nor a dict.
        ValueError: If a setting is out of range, or ``model`` holds NaN or infinite weights.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        eq = keras_eff.ptq.equalize(model)
        print(keras_eff.get_report(eq, "equalization"))
        q = keras_eff.quantize_model(eq, keras_eff.QuantConfig(weight_granularity="per_tensor"))
        ```
    """
    params = resolve_config(EqualizeConfig, config, kwargs, "equalize")
    if not isinstance(model, keras.Model):
        raise TypeError(f"equalize expects a Keras 3 model, got {type(model).__name__}")
    functional_of(model)  # clear error for subclassed / unbuilt models
    check_finite_weights(model, "equalizing it")
    report = EqualizationReport()
    raw_stats = _bn_statistics(model)
    folded = fold_batchnorm(model)
    report.folded_batchnorm = [(name, bn) for name, (bn, _, _) in raw_stats.items()]
    stats = {name: [mean, std] for name, (_, mean, std) in raw_stats.items()}

    weights = {}
    for layer in folded.layers:
        if lm.is_scalable(layer):
            weights[layer.name] = list(lm.kernel_and_bias(layer))
            report.ranges_before[layer.name] = lm.out_ranges(layer, weights[layer.name][0]).tolist()
    by_name = {layer.name: layer for layer in folded.layers}
    pairs = _find_pairs(folded, params, report) if (params.scale or params.absorb_bias) else []

    if params.scale:
        for sweep in range(int(params.max_iterations)):
            change = 0.0
            for p in pairs:
                l1, l2 = by_name[p.first], by_name[p.second]
                (w1, b1), (w2, _) = weights[p.first], weights[p.second]
                r1, r2 = lm.out_ranges(l1, w1), lm.in_ranges(l2, w2)
                ok = (r1 > 0) & (r2 > 0)
                s = np.where(ok, np.sqrt(r1 * r2) / np.where(ok, r2, 1.0), 1.0)
                weights[p.first][0] = w1 / s.reshape(lm.out_shape(l1, w1))
                weights[p.first][1] = b1 / s
                weights[p.second][0] = w2 * s.reshape(lm.in_shape(l2, w2))
                if p.first in stats:
                    stats[p.first] = [stats[p.first][0] / s, stats[p.first][1] / s]
                change = max(change, float(np.max(np.abs(np.log(s)))))
            report.iterations = sweep + 1
            if change < params.tolerance:
                break
    if params.absorb_bias:
        for p in pairs:
            if p.activation != "relu" or p.first not in stats:
                continue
            if not (p.shift_ok or params.absorb_through_padding):
                continue
            mean, std = stats[p.first]
            c = np.maximum(0.0, mean - params.absorb_sigmas * std)
            if not np.any(c > 0):
                continue
            l2 = by_name[p.second]
            weights[p.first][1] = weights[p.first][1] - c
            weights[p.second][1] = weights[p.second][1] + lm.input_sum(l2, weights[p.second][0], c)
            stats[p.first] = [mean - c, std]
            report.absorbed[p.first] = float(c.sum())

    # a ReLU6 inside a scaled pair, or one a bias was absorbed through, becomes ReLU (neither commutes with the clip)
    changed = pairs if params.scale else [p for p in pairs if p.first in report.absorbed]
    relu6 = {name for p in changed for name in p.relu6_layers}
    report.pairs = [(p.first, p.second, p.activation) for p in pairs] if params.scale else []
    report.relu6_replaced = sorted(relu6)

    def transform(rb, node, args, kwargs):
        op = node.operation
        if not isinstance(op, layers.Layer):
            return None
        if op.name in weights:

            def make(a, k):  # once for a layer called several times (left out of the pairs: not scaled)
                overrides = {"use_bias": True}
                if op.name in relu6:
                    overrides["activation"] = "relu"
                new = clone_layer(op, **overrides)
                out = new(*a, **k)
                kernel, bias = weights[op.name]
                new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
                return new, out

            return rb.call_shared(op, args, kwargs, make)
        if op.name in relu6:
            return layers.ReLU(name=op.name)(*args, **kwargs)
        return None

    new = rebuild(folded, transform, name=model.name)
    for name, (kernel, _) in weights.items():
        report.ranges_after[name] = lm.out_ranges(by_name[name], kernel).tolist()
    report.statistics = {name: {"mean": m.tolist(), "std": s.tolist()} for name, (m, s) in stats.items()}
    attach_report(new, "equalization", report)
    return new


__all__ = ["EqualizationReport", "equalize"]
