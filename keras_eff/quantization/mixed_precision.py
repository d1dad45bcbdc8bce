"""Mixed-precision weights: per-layer sensitivity, then per-layer bit widths chosen largest layers first.

Sensitivity of a layer at b bits: the drop in ``eval_fn`` (higher is better: accuracy, say) when only that layer's
weights go from 8 to b bits. The choice (after Arm's sensitivity method) visits layers from the most parameters to
the fewest: for a target average width it lowers each layer to the smallest width whose sensitivity stays under a
tolerance, raising the tolerance until the parameter-weighted average width reaches the target; for a maximum drop it
lowers layers one width at a time, keeping a step only while the whole model stays within the drop. The widths go
into a ``QuantConfig`` (overrides by layer name). int8 TFLite stores sub-8-bit weights as int8, so the result gives
both the file size and the packed size a runtime with sub-8-bit kernels would hold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import keras
import numpy as np
from tqdm.auto import tqdm

import tflite_export as te

from ..data import model_samples
from ..graph import release
from ..options import deprecated_aliases, resolve_config, warn_deprecated
from .calibration import activation_quantizers, calibrate
from .config import QuantConfig
from .model import quantize_model
from .quantizers import check_bits
from .wrapper import QuantizeWrapper


@dataclass
class MixedPrecisionConfig:
    """The options of ``mixed_precision``.

    Give ``target_average_bits``, ``max_drop`` or both. With a target, layers are lowered (largest first) until the
    parameter-weighted average width reaches it; with ``max_drop`` too, layers are then raised again (most sensitive
    first) until the score is within the drop. With ``max_drop`` alone, each layer (largest first) goes as low as the
    whole model's drop allows.

    Attributes:
        target_average_bits: The parameter-weighted average weight width to reach, between the smallest candidate
            width and 8.
        max_drop: The largest drop of ``eval_fn``'s score from the all-8-bit model accepted, in the score's units
            (0.01 for one point of accuracy as a fraction); zero or positive.
        candidate_bits: The weight widths to choose from, each 2 to 8; normalized to a descending tuple that holds 8.
        calibration_samples: How many inputs of ``data`` calibrate the activation ranges (once, shared by every
            candidate).

    Raises:
        ValueError: If neither ``target_average_bits`` nor ``max_drop`` is given, a candidate width is outside 2 to
            8, ``target_average_bits`` lies outside [smallest candidate, 8] or ``max_drop`` is negative.
    """

    target_average_bits: float | None = None
    max_drop: float | None = None
    candidate_bits: tuple = (8, 6, 4)
    calibration_samples: int = 512

    def __post_init__(self):
        self.candidate_bits = tuple(sorted({int(b) for b in self.candidate_bits}, reverse=True))
        for b in self.candidate_bits:
            check_bits(b, "candidate_bits")
            if b > 8:
                raise ValueError(f"candidate_bits holds {b}: int8 TFLite weights take at most 8 bits")
        if 8 not in self.candidate_bits:
            self.candidate_bits = (8,) + self.candidate_bits
        if self.target_average_bits is None and self.max_drop is None:
            raise ValueError("give target_average_bits (e.g. 5.0) or max_drop (e.g. 0.01), or both")
        if self.target_average_bits is not None and not (min(self.candidate_bits) <= self.target_average_bits <= 8):
            raise ValueError(
                f"target_average_bits={self.target_average_bits} is out of range: it must lie between "
                f"{min(self.candidate_bits)} (the smallest candidate width) and 8"
            )
        if self.max_drop is not None and self.max_drop < 0:
            raise ValueError(f"max_drop={self.max_drop} must be zero or positive")

    def get_config(self):
        """Serializes the options.

        Returns:
            ``{field: value}``, ``candidate_bits`` as a list.
        """
        out = asdict(self)
        out["candidate_bits"] = list(self.candidate_bits)
        return out

    @classmethod
    def from_config(cls, config):
        """Makes options from a dict written by ``get_config``.

        Args:
            config: ``{field: value}``.

        Returns:
            A new `MixedPrecisionConfig`, checked as when it is made.
        """
        return cls(**config)


@dataclass
class MixedPrecisionResult:
    """What ``mixed_precision`` chose and measured.

    Attributes:
        bits: ``{layer name: weight bits}`` for every layer with kernels.
        config: The `QuantConfig` that quantizes with these widths (the given config with ``weight_bits`` overrides
            by layer name); pass it to ``quantize_model``.
        average_bits: The parameter-weighted average weight width.
        score: ``eval_fn``'s score of the chosen model.
        baseline_score: ``eval_fn``'s score with every layer at 8 bits.
        sensitivity: ``{layer name: {bits: drop}}``, as ``layer_sensitivity`` returns it.
        parameters: ``{layer name: number of kernel weights}``.
        model: The quantized model with the chosen widths, its activation ranges calibrated.
        tflite_bytes: Size of ``model``'s int8 TFLite file (None with ``export=False``).
        packed_bytes: What the file would take with sub-8-bit weights packed at their widths (None with
            ``export=False``); int8 TFLite itself stores every weight in 8 bits.
        evaluations: Every ``eval_fn`` call made: ``{"bits": {layer: bits}, "score": score}`` dicts, in order.
    """

    bits: dict  # layer name -> weight bits
    config: QuantConfig
    average_bits: float
    score: float
    baseline_score: float  # every layer at 8 bits
    sensitivity: dict  # layer -> {bits: drop}
    parameters: dict  # layer -> kernel parameter count
    model: keras.Model = None
    tflite_bytes: int | None = None
    packed_bytes: int | None = None
    evaluations: list = field(default_factory=list)

    @property
    def drop(self) -> float:
        """``baseline_score - score``: how much the chosen widths cost."""
        return self.baseline_score - self.score

    def as_dict(self) -> dict:
        """The result as JSON-ready types (``model`` and ``evaluations`` left out, ``config`` as its config dict).

        Returns:
            A dict with the keys bits, config, average_bits, score, baseline_score, drop, sensitivity, parameters,
            tflite_bytes and packed_bytes.
        """
        return {
            "bits": self.bits,
            "config": self.config.get_config(),
            "average_bits": self.average_bits,
            "score": self.score,
            "baseline_score": self.baseline_score,
            "drop": self.drop,
            "sensitivity": {k: {str(b): d for b, d in v.items()} for k, v in self.sensitivity.items()},
            "parameters": self.parameters,
            "tflite_bytes": self.tflite_bytes,
            "packed_bytes": self.packed_bytes,
        }

    def __str__(self):
        sizes = (
            "" if self.tflite_bytes is None else (f"; TFLite {self.tflite_bytes:,} B, packed {self.packed_bytes:,} B")
        )
        return (
            f"mixed precision: average {self.average_bits:.2f} bits, score {self.score:.4f} (all 8-bit "
            f"{self.baseline_score:.4f}){sizes}\n"
            + "\n".join(f"  {n}: {b} bits ({self.parameters[n]:,} weights)" for n, b in self.bits.items())
        )


class _Evaluator:
    """Quantizes with a given set of widths, reusing activation ranges calibrated once, and scores the result."""

    def __init__(self, model, data, eval_fn, base_config, samples):
        self.model, self.eval_fn, self.base = model, eval_fn, base_config
        ref = quantize_model(model, base_config)
        calibrate(ref, data[:samples], progress=False)
        self.ranges = {q.name: q.get_weights() for q in activation_quantizers(ref)}
        self.reference = ref
        self.log = []

    def config(self, bits: dict) -> QuantConfig:
        overrides = {k: dict(v) for k, v in self.base.overrides.items()}
        for name, b in bits.items():
            overrides.setdefault(name, {})["weight_bits"] = int(b)
        return replace(self.base, overrides=overrides)

    def build(self, bits: dict):
        q = quantize_model(self.model, self.config(bits))
        for aq in activation_quantizers(q):
            if aq.name in self.ranges:
                aq.set_weights(self.ranges[aq.name])
        return q

    def score(self, bits: dict) -> float:
        candidate = self.build(bits)
        try:
            s = float(self.eval_fn(candidate))
        finally:
            release(candidate)  # it shares stateless layers with the user's model, which would keep it alive
        if not math.isfinite(s):
            raise ValueError(f"eval_fn returned {s}; it must return a finite score (higher is better)")
        self.log.append({"bits": dict(bits), "score": s})
        return s


def _kernel_layers(qmodel) -> dict:
    out = {}
    for layer in qmodel._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, QuantizeWrapper) and layer.has_kernel:
            out[layer.layer.name] = sum(
                int(np.prod(getattr(layer.layer, n).shape))
                for n in ("kernel", "depthwise_kernel", "pointwise_kernel")
                if hasattr(layer.layer, n) and getattr(layer.layer, n) is not None
            )
    return out


def average_bits(bits: dict, parameters: dict) -> float:
    total = sum(parameters.values())
    return sum(parameters[n] * bits.get(n, 8) for n in parameters) / total


def _quant_config(function, quant_config, config):
    """The QuantConfig given as ``quant_config=``, or (deprecated) as ``config=``."""
    if config is None:
        return quant_config
    if quant_config is not None:
        raise TypeError(f"{function} got a QuantConfig as config= and quant_config=; give it once, as quant_config=")
    warn_deprecated(f"{function}(config=QuantConfig(...))", f"{function}(quant_config=QuantConfig(...))", 4)
    return config


def layer_sensitivity(
    model,
    data,
    eval_fn,
    candidate_bits=(6, 4),
    quant_config: QuantConfig | None = None,
    layers=None,
    calibration_samples: int = 512,
    *,
    config: QuantConfig | None = None,
    _evaluator=None,
) -> dict:
    """Measures how much ``eval_fn`` drops when only one layer's weights go to fewer bits.

    Quantizes ``model`` with ``config`` and calibrates its activation ranges once; every candidate reuses those ranges
    and changes the weight width of one layer only.

    Args:
        model: A float Functional or Sequential model. Not changed.
        data: Typical inputs for the calibration, in any form ``calibrate`` takes (array, ``(x, y)``,
            ``tf.data.Dataset``, ``PyDataset``, generator).
        eval_fn: ``eval_fn(quantized_model) -> float``, higher is better (accuracy on held-out data, say).
        candidate_bits: The widths to try for each layer; widths of 8 or more are not tried.
        quant_config: The other quantization settings (granularity, ...), a `QuantConfig`; default
            ``QuantConfig()``.
        layers: Names of the layers to measure; default every layer with kernels.
        calibration_samples: How many inputs of ``data`` calibrate the ranges.
        config: Deprecated: the old name of ``quant_config`` (for one release, with a DeprecationWarning).
        _evaluator: Internal (``mixed_precision`` passes its own); leave it out.

    Returns:
        ``{layer name: {bits: drop}}``, the drop being the all-8-bit score minus the score with that layer at
        ``bits``.

    Raises:
        ValueError: If ``data`` is None, does not match the model's input or holds NaN or infinite values, or
            ``eval_fn`` returns a score that is not finite.
        TypeError: If a `QuantConfig` is given both as ``quant_config`` and ``config``.

    Example:
        ```python
        drops = keras_eff.quantization.layer_sensitivity(model, x_cal, eval_fn, candidate_bits=(6, 4))
        keras_eff.ptq.plot_sensitivity(drops, "sensitivity.png")
        ```
    """
    quant_config = _quant_config("layer_sensitivity", quant_config, config)
    ev = _evaluator or _Evaluator(
        model, _data(model, data, calibration_samples), eval_fn, quant_config or QuantConfig(), calibration_samples
    )
    base = ev.score({})
    names = list(_kernel_layers(ev.reference)) if layers is None else list(layers)
    out: dict[str, dict[int, float]] = {}
    todo = [(n, b) for n in names for b in candidate_bits if b < 8]
    for name, b in tqdm(todo, desc="sensitivity", leave=False):
        out.setdefault(name, {})[b] = base - ev.score({name: b})
    return out


def _data(model, data, max_samples):
    return model_samples(model, data, "data", max_samples)


def mixed_precision(
    model,
    data,
    eval_fn,
    config: MixedPrecisionConfig | dict | None = None,
    *,
    quant_config: QuantConfig | None = None,
    export: bool = True,
    **kwargs,
) -> MixedPrecisionResult:
    """Chooses a weight width per layer of a float model, for a target average width and/or a maximum score drop.

    Measures each layer's sensitivity (``layer_sensitivity``), then visits the layers from the most parameters to the
    fewest (after Arm's sensitivity method; see `MixedPrecisionConfig` for the two criteria). Activation ranges are
    calibrated once on ``data`` and shared by every candidate. ``model`` is not changed.

    Args:
        model: A float Functional or Sequential model. Not changed.
        data: Typical inputs for the calibration, in any form ``keras_eff.calibrate`` takes (array, ``(x, y)``,
            ``tf.data.Dataset``, ``PyDataset``, generator).
        eval_fn: ``eval_fn(quantized_model) -> float``, higher is better (accuracy on held-out data, say). Called
            once per candidate.
        config: A `MixedPrecisionConfig` or a dict of its fields. A `QuantConfig` here still works for one release,
            with a DeprecationWarning: pass it as ``quant_config``.
        quant_config: The other quantization settings (granularity, ...), a `QuantConfig`; its overrides are kept.
            Default ``QuantConfig()``.
        export: Convert the chosen model to int8 TFLite to fill in ``tflite_bytes`` and ``packed_bytes``.
        **kwargs: Fields of `MixedPrecisionConfig` (``target_average_bits=5``, ``max_drop=0.01``,
            ``candidate_bits=(8, 6, 4)``, ``calibration_samples``), each overriding ``config``'s.

    Returns:
        A `MixedPrecisionResult`: the widths, the `QuantConfig` that gives them, the calibrated quantized model, its
        score against the all-8-bit one, and its sizes.

    Raises:
        TypeError: If a keyword is not a field of `MixedPrecisionConfig`, ``eval_fn`` is not callable, or a
            `QuantConfig` is given both as ``config`` and ``quant_config``.
        ValueError: If the settings are invalid (see `MixedPrecisionConfig`), ``data`` is missing or does not match
            the model's input, or ``eval_fn`` returns a score that is not finite.

    Example:
        ```python
        result = keras_eff.quantization.mixed_precision(model, x_train[:512], lambda m: accuracy(m, x_val, y_val),
                                                        target_average_bits=5, max_drop=0.01)
        qat = keras_eff.quantize_model(model, result.config)
        ```
    """
    if isinstance(config, QuantConfig):
        quant_config = _quant_config("mixed_precision", quant_config, config)
        config = None
    params = resolve_config(MixedPrecisionConfig, config, kwargs, "mixed_precision")
    if not callable(eval_fn):
        raise TypeError("eval_fn must be a callable taking a quantized model and returning a score")
    x = _data(model, data, params.calibration_samples)
    ev = _Evaluator(model, x, eval_fn, quant_config or QuantConfig(), params.calibration_samples)
    parameters = _kernel_layers(ev.reference)
    baseline = ev.score({})
    lower = [b for b in params.candidate_bits if b < 8]
    sens = layer_sensitivity(model, x, eval_fn, lower, _evaluator=ev)
    order = sorted(parameters, key=lambda n: -parameters[n])  # largest layers first
    bits = dict.fromkeys(order, 8)
    if params.target_average_bits is not None:
        tolerances = sorted({d for v in sens.values() for d in v.values()})
        for tol in tolerances:
            trial = dict.fromkeys(order, 8)
            for n in order:
                if average_bits(trial, parameters) <= params.target_average_bits + 1e-9:
                    break
                ok = [b for b in lower if sens[n][b] <= tol]
                if ok:
                    trial[n] = min(ok)
            bits = trial
            if average_bits(trial, parameters) <= params.target_average_bits + 1e-9:
                break
        score = ev.score(bits)
        if params.max_drop is not None:
            while baseline - score > params.max_drop:
                low = [n for n in bits if bits[n] < 8]
                if not low:
                    break
                worst = max(low, key=lambda n: sens[n][bits[n]])
                bits[worst] = min(b for b in params.candidate_bits if b > bits[worst])
                score = ev.score(bits)
    else:
        assert params.max_drop is not None, "MixedPrecisionConfig needs target_average_bits or max_drop"
        score = baseline
        for n in tqdm(order, desc="mixed precision", leave=False):
            for b in lower:
                trial = dict(bits, **{n: b})
                s = ev.score(trial)
                if baseline - s <= params.max_drop:
                    bits, score = trial, s
                else:
                    break
    final = ev.build(bits)
    result = MixedPrecisionResult(
        bits=bits,
        config=ev.config(dict(bits)),
        average_bits=average_bits(bits, parameters),
        score=score,
        baseline_score=baseline,
        sensitivity=sens,
        parameters=parameters,
        model=final,
        evaluations=ev.log,
    )
    if export:
        size = len(te.to_tflite(final))
        result.tflite_bytes = size
        result.packed_bytes = (
            size - sum(parameters.values()) + sum(math.ceil(parameters[n] * bits[n] / 8) for n in parameters)
        )
    return result


# the name before the …Config convention: for one release, with a DeprecationWarning
__getattr__ = deprecated_aliases(
    __name__, {"MixedPrecisionParams": (MixedPrecisionConfig, "keras_eff.quantization.MixedPrecisionConfig")}
)
