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

from ..data import model_samples
from ..graph import release
from .calibration import activation_quantizers, calibrate
from .config import QuantConfig
from .model import quantize_model
from .quantizers import check_bits
from .wrapper import QuantizeWrapper


@dataclass
class MixedPrecisionParams:
    """Options of ``mixed_precision``: a target parameter-weighted average width and/or a maximum drop of
    ``eval_fn`` (same units as its score), the widths to choose from, and the calibration sample count."""

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
        if self.target_average_bits is not None and not (
                min(self.candidate_bits) <= self.target_average_bits <= 8):
            raise ValueError(f"target_average_bits={self.target_average_bits} is out of range: it must lie between "
                             f"{min(self.candidate_bits)} (the smallest candidate width) and 8")
        if self.max_drop is not None and self.max_drop < 0:
            raise ValueError(f"max_drop={self.max_drop} must be zero or positive")

    def get_config(self):
        out = asdict(self)
        out["candidate_bits"] = list(self.candidate_bits)
        return out

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@dataclass
class MixedPrecisionResult:
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
        return self.baseline_score - self.score

    def as_dict(self) -> dict:
        return {"bits": self.bits, "config": self.config.get_config(), "average_bits": self.average_bits,
                "score": self.score, "baseline_score": self.baseline_score, "drop": self.drop,
                "sensitivity": {k: {str(b): d for b, d in v.items()} for k, v in self.sensitivity.items()},
                "parameters": self.parameters, "tflite_bytes": self.tflite_bytes, "packed_bytes": self.packed_bytes}

    def __str__(self):
        sizes = "" if self.tflite_bytes is None else (f"; TFLite {self.tflite_bytes:,} B, packed "
                                                      f"{self.packed_bytes:,} B")
        return (f"mixed precision: average {self.average_bits:.2f} bits, score {self.score:.4f} (all 8-bit "
                f"{self.baseline_score:.4f}){sizes}\n" + "\n".join(f"  {n}: {b} bits ({self.parameters[n]:,} "
                                                                    f"weights)" for n, b in self.bits.items()))


class _Evaluator:
    """Quantizes with a given set of widths, reusing activation ranges calibrated once, and scores the result."""

    def __init__(self, model, data, eval_fn, base_config, samples):
        self.model, self.eval_fn, self.base = model, eval_fn, base_config
        ref = calibrate(quantize_model(model, base_config), data[:samples], progress=False)
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
            out[layer.layer.name] = sum(int(np.prod(getattr(layer.layer, n).shape))
                                        for n in ("kernel", "depthwise_kernel", "pointwise_kernel")
                                        if hasattr(layer.layer, n) and getattr(layer.layer, n) is not None)
    return out


def average_bits(bits: dict, parameters: dict) -> float:
    total = sum(parameters.values())
    return sum(parameters[n] * bits.get(n, 8) for n in parameters) / total


def layer_sensitivity(model, data, eval_fn, candidate_bits=(6, 4), config: QuantConfig | None = None,
                      layers=None, calibration_samples: int = 512, _evaluator=None) -> dict:
    """{layer: {bits: drop}}: how much ``eval_fn`` drops when only that layer's weights go to ``bits``."""
    ev = _evaluator or _Evaluator(model, _data(model, data, calibration_samples), eval_fn, config or QuantConfig(),
                                            calibration_samples)
    base = ev.score({})
    names = list(_kernel_layers(ev.reference)) if layers is None else list(layers)
    out = {}
    todo = [(n, b) for n in names for b in candidate_bits if b < 8]
    for name, b in tqdm(todo, desc="sensitivity", leave=False):
        out.setdefault(name, {})[b] = base - ev.score({name: b})
    return out


def _data(model, data, max_samples):
    return model_samples(model, data, "data", max_samples)


def mixed_precision(model, data, eval_fn, params: MixedPrecisionParams | None = None, *,
                    config: QuantConfig | None = None, export: bool = True, **kwargs) -> MixedPrecisionResult:
    """Chooses per-layer weight widths for ``model`` (float) and returns a ``MixedPrecisionResult`` with the
    ``QuantConfig``, the calibrated quantized model, its score and sizes.

    eval_fn(quantized_model) -> float, higher is better (e.g. accuracy on held-out data). ``data`` calibrates the
    activation ranges. Settings: ``MixedPrecisionParams`` or keywords (target_average_bits=5, max_drop=0.01,
    candidate_bits=(8, 6, 4)). ``config`` gives the other settings (granularity, ...); its overrides are kept.
    """
    if params is None:
        params = MixedPrecisionParams(**kwargs)
    elif kwargs:
        raise TypeError("give either params or keyword settings, not both")
    if not callable(eval_fn):
        raise TypeError("eval_fn must be a callable taking a quantized model and returning a score")
    x = _data(model, data, params.calibration_samples)
    ev = _Evaluator(model, x, eval_fn, config or QuantConfig(), params.calibration_samples)
    parameters = _kernel_layers(ev.reference)
    baseline = ev.score({})
    lower = [b for b in params.candidate_bits if b < 8]
    sens = layer_sensitivity(model, x, eval_fn, lower, _evaluator=ev)
    order = sorted(parameters, key=lambda n: -parameters[n])  # largest layers first
    bits = {n: 8 for n in order}
    if params.target_average_bits is not None:
        tolerances = sorted({d for v in sens.values() for d in v.values()})
        for tol in tolerances:
            trial = {n: 8 for n in order}
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
    result = MixedPrecisionResult(bits=bits, config=ev.config({n: b for n, b in bits.items()}),
                                  average_bits=average_bits(bits, parameters), score=score, baseline_score=baseline,
                                  sensitivity=sens, parameters=parameters, model=final, evaluations=ev.log)
    if export:
        import tflite_export as te

        size = len(te.to_tflite(final))
        result.tflite_bytes = size
        result.packed_bytes = size - sum(parameters.values()) + sum(
            math.ceil(parameters[n] * bits[n] / 8) for n in parameters)
    return result
