"""AutoQuant: post-training quantization steps tried in order until the accuracy target is met.

Steps: "ptq" (quantize_model + calibrate), "cle" (equalize, then the same), "cle+bc" (plus empirical bias
correction), "cle+adaround" (AdaRound on the equalized model, ranges calibrated again afterwards). Each step starts
from the float model, so each result stands alone; the first that reaches float − allowed_drop ends the search and
the best model seen is returned, with a markdown report and a bar chart of every step tried.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras

from tflite_export import atomic_write

from ..options import resolve_config, warn_deprecated
from ..quantization import QuantConfig, calibrate, quantize_model
from ..reporting import agg_subplots as subplots
from ..reporting import attach_report, markdown_table
from . import common
from .adaround import adaround
from .bias_correction import bias_correction
from .config import AdaRoundConfig, AutoQuantConfig, BiasCorrectionConfig, EqualizeConfig
from .equalize import equalize


@dataclass
class AutoQuantResult:
    """What `auto_quant` returns: the best quantized model and every step's score.

    Also ``keras_eff.get_report(result.model, "auto_quant")`` (a copy with ``model`` set to None).

    Attributes:
        model: The best quantized model (calibrated), a new model.
        best_step: The step that made it: ``"ptq"``, ``"cle"``, ``"cle+bc"`` or ``"cle+adaround"``.
        float_score: ``eval_fn``'s score of the float model.
        target: ``float_score`` minus the allowed drop.
        steps: One dict per step tried, in order: ``{"step", "score", "drop", "seconds", "met"}``.
        report_path: The markdown report written, or None.
        plot_path: The bar chart written beside it, or None.
        report_error: Why the report could not be written (the result is returned all the same), or None.
    """

    model: keras.Model
    best_step: str
    float_score: float
    target: float
    steps: list = field(default_factory=list)
    report_path: str | None = None
    plot_path: str | None = None
    report_error: str | None = None

    @property
    def target_met(self) -> bool:
        """Whether a step reached the target."""
        return any(s["met"] for s in self.steps)


def _score(eval_fn, model, what):
    s = float(eval_fn(model))
    if not math.isfinite(s):
        raise ValueError(f"eval_fn returned {s} for {what}; it must return a finite score (higher is better)")
    return s


def _plot(result, path):
    names = [s["step"] for s in result.steps]
    scores = [s["score"] for s in result.steps]
    fig, ax = subplots(figsize=(1.6 * len(names) + 2.5, 3.4))
    bars = ax.bar(names, scores, color=["tab:green" if s["met"] else "tab:gray" for s in result.steps])
    ax.axhline(result.float_score, color="tab:blue", lw=1, label=f"float {result.float_score:.4f}")
    ax.axhline(result.target, color="tab:red", lw=1, ls="--", label=f"target {result.target:.4f}")
    for b, s in zip(bars, scores):
        ax.annotate(f"{s:.4f}", (b.get_x() + b.get_width() / 2, s), ha="center", va="bottom", fontsize=8)
    low = min(scores + [result.target])
    ax.set_ylim(max(0.0, low - 0.1 * (result.float_score - low + 1e-3) - 0.02), result.float_score * 1.02 + 1e-3)
    ax.set_ylabel("score")
    ax.set_title("AutoQuant: score after each step")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue())


def _check_report_path(report_path) -> str:
    """The report path as a string, once its folder exists (created if need be) and takes a new file: checked before
    any step runs, so that a typo does not cost the whole search."""
    path = Path(report_path)
    try:
        if path.is_dir():
            raise IsADirectoryError(f"it is a folder; give a file name such as {str(path / 'auto_quant.md')!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        why = err.strerror or str(err)
        raise type(err)(
            f"auto_quant cannot write its report to {str(path)!r}: {why} ({str(path.parent)!r}). Give "
            f"a report_path in a writable folder, or report_path=None for no files; no step was "
            f"run"
        ) from err
    return str(path)


def _write_report(result, path, options, config):
    stem = os.path.splitext(path)[0]
    plot = stem + ".png"
    _plot(result, plot)
    rows = [
        dict(
            step=s["step"],
            score=s["score"],
            drop=s["drop"],
            seconds=s["seconds"],
            target_met="yes" if s["met"] else "no",
        )
        for s in result.steps
    ]
    skipped = [s for s in options.steps if s not in [r["step"] for r in result.steps]]
    md = (
        f"# AutoQuant report\n\nFloat score {result.float_score:.4f}; target {result.target:.4f} "
        f"(allowed drop {options.allowed_drop}). Weights {config.weight_bits}-bit "
        f"{config.weight_granularity}, activations {config.activation_bits}-bit.\n\n"
        + markdown_table(rows, ["step", "score", "drop", "seconds", "target_met"])
        + f"\nBest: **{result.best_step}** ({'target met' if result.target_met else 'target not met'}).\n"
        + (f"Not tried (target met before): {', '.join(skipped)}.\n" if skipped else "")
        + f"\n![scores per step]({os.path.basename(plot)})\n"
    )
    atomic_write(path, md)
    result.report_path, result.plot_path = path, plot


def auto_quant(
    model,
    data,
    eval_fn,
    allowed_drop: float | None = None,
    *,
    config: AutoQuantConfig | dict | None = None,
    quant_config: QuantConfig | None = None,
    report_path: str | None = "auto_quant.md",
    progress: bool = True,
    **kwargs,
) -> AutoQuantResult:
    """Tries post-training quantization steps on a float model, in order, until the score is within the allowed drop.

    The steps: ``"ptq"`` (quantize_model + calibrate), ``"cle"`` (`equalize`, then the same), ``"cle+bc"`` (plus
    empirical `bias_correction`), ``"cle+adaround"`` (`adaround` on the equalized model, ranges calibrated again).
    Each starts from the float model, so each result stands alone; the first whose ``eval_fn`` score reaches
    ``eval_fn(model) − allowed_drop`` ends the search, and the best model seen is returned. A markdown report with a
    bar chart of every step tried is written to ``report_path``.

    Args:
        model: A float Functional or Sequential Keras model. Not changed.
        data: Calibration inputs (also AdaRound's and bias correction's), in any form ``keras_eff.calibrate`` takes.
        eval_fn: ``eval_fn(model) -> float``, higher is better (accuracy on held-out data, say).
        allowed_drop: The largest drop from the float model's score that ends the search; overrides
            ``config.allowed_drop`` (default 0.01).
        config: An `AutoQuantConfig` or a dict of its fields (the steps to try, their options); default
            ``AutoQuantConfig()``. A `QuantConfig` here still works for one release, with a DeprecationWarning: pass
            it as ``quant_config``.
        quant_config: The `QuantConfig` of every step; default ``QuantConfig()`` (8-bit, per-channel where
            exportable).
        report_path: The markdown report's path (a PNG bar chart is written beside it); its folder is created, and
            checked to be writable before any step runs. None: no files.
        progress: Show progress bars and print each step's score.
        **kwargs: Fields of `AutoQuantConfig` (``steps=("ptq", "cle")``, ...), each overriding ``config``'s.

    Returns:
        An `AutoQuantResult` with the best model. Should writing the report fail at the end, the result is returned
        all the same, with a ``RuntimeWarning`` and ``result.report_error`` saying why.

    Raises:
        TypeError: If ``eval_fn`` is not callable, a keyword is not a field of `AutoQuantConfig`, or a `QuantConfig`
            is given both as ``config`` and ``quant_config``.
        ValueError: If a setting is out of range, ``data`` does not match the model's input, or ``eval_fn`` returns
            a score that is not finite.
        OSError: If ``report_path`` cannot be written (before any step runs).

    Example:
        ```python
        result = keras_eff.ptq.auto_quant(model, x_cal, eval_fn, allowed_drop=0.01, report_path="aq/auto_quant.md")
        print(result.best_step, result.steps)
        tflite_bytes = tflite_export.to_tflite(result.model)
        ```
    """
    if isinstance(config, QuantConfig):
        if quant_config is not None:
            raise TypeError("auto_quant got a QuantConfig as config= and quant_config=; give it once, as quant_config=")
        warn_deprecated("auto_quant(config=QuantConfig(...))", "auto_quant(quant_config=QuantConfig(...))")
        config, quant_config = None, config
    if allowed_drop is not None:
        kwargs["allowed_drop"] = allowed_drop
    options = resolve_config(AutoQuantConfig, config, kwargs, "auto_quant")
    if not callable(eval_fn):
        raise TypeError("eval_fn must be a callable taking a model and returning a score (higher is better)")
    qconfig = quant_config or QuantConfig()
    eq = EqualizeConfig.from_config(options.equalize or {})
    bc = BiasCorrectionConfig.from_config(options.bias_correction or {})
    ar = AdaRoundConfig.from_config(options.adaround or {})
    if report_path:
        report_path = _check_report_path(report_path)
    # the most inputs any step reads (calibrate's default 1024): an endless dataset or generator is read that far
    x = common.check_data(model, data, "auto_quant data", max(1024, bc.max_samples, ar.max_samples))
    float_score = _score(eval_fn, model, "the float model")
    target = float_score - options.allowed_drop
    result = AutoQuantResult(model=None, best_step="", float_score=float_score, target=target)
    equalized = None
    best = -math.inf
    for step in options.steps:
        t0 = time.perf_counter()
        if step == "ptq":
            q = quantize_model(model, qconfig)
            calibrate(q, x, progress=progress)
        else:
            if equalized is None:
                equalized = equalize(model, eq)
            q = quantize_model(equalized, qconfig)
            calibrate(q, x, progress=progress)
            if step == "cle+bc":
                q = bias_correction(q, x, bc)
            elif step == "cle+adaround":
                q = adaround(q, x, ar)  # float targets: q with its quantizers bypassed (the equalized model)
                calibrate(q, x, progress=progress)
        score = _score(eval_fn, q, f"step {step!r}")
        met = score >= target
        result.steps.append(
            dict(step=step, score=score, drop=float_score - score, seconds=time.perf_counter() - t0, met=met)
        )
        if progress:
            print(f"auto_quant: {step}: {score:.4f} (float {float_score:.4f}, target {target:.4f})")
        if score > best:
            best, result.model, result.best_step = score, q, step
        if met:
            break
    if report_path:
        try:
            _write_report(result, report_path, options, qconfig)
        except OSError as err:
            result.report_path = result.plot_path = None
            result.report_error = (
                f"auto_quant could not write the report to {report_path!r} "
                f"({type(err).__name__}: {err}); the result is returned all the same (best step "
                f"{result.best_step!r})"
            )
            warnings.warn(result.report_error, RuntimeWarning, stacklevel=2)
    attach_report(result.model, "auto_quant", replace(result, model=None))
    return result


__all__ = ["AutoQuantResult", "auto_quant"]
