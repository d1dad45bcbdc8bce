"""Analysis: weight ranges per channel before and after CLE, per-layer sensitivity, and where the int8 TFLite file
first drifts from the simulation. Each returns its data and, given a path, saves a plot (matplotlib's Agg canvas;
the pyplot backend is left alone)."""

from __future__ import annotations

import re

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tflite_export as te
from tflite_export.files import atomic_savefig

from ..graph import tensors_in
from ..reporting import agg_subplots as subplots
from ..reporting import get_reports
from . import common
from . import layer_math as lm


def weight_ranges(report_or_model) -> dict:
    """Gives the weight range (max |w|) of each output channel of each layer, before and after equalization.

    Args:
        report_or_model: The model `equalize` returned (its report is read), its `EqualizationReport`, or any other
            model (its top-level Conv2D, DepthwiseConv2D and Dense kernels are read). Not changed.

    Returns:
        ``{"before": {layer: [max|w| per output channel]}, "after": {...}}`` for an equalized model or its report;
        ``{"after": {...}}`` for another model.

    Example:
        ```python
        ranges = keras_eff.ptq.weight_ranges(keras_eff.ptq.equalize(model))
        ```
    """
    report = get_reports(report_or_model).get("equalization", report_or_model)
    if hasattr(report, "ranges_before"):
        return {"before": report.ranges_before, "after": report.ranges_after}
    out = {}
    for layer in report_or_model.layers:
        if lm.is_scalable(layer):
            out[layer.name] = lm.out_ranges(layer, np.asarray(layer.kernel)).tolist()
    return {"after": out}


def plot_weight_ranges(report_or_model, path) -> dict:
    """Saves box plots of the per-channel weight ranges of each layer, before and after equalization (log scale).

    Args:
        report_or_model: What `weight_ranges` takes. Not changed.
        path: The image file to write (PNG, or any format matplotlib infers from the suffix).

    Returns:
        What `weight_ranges` returns.

    Example:
        ```python
        keras_eff.ptq.plot_weight_ranges(keras_eff.ptq.equalize(model), "ranges.png")
        ```
    """
    data = weight_ranges(report_or_model)
    names = list(data["after"])
    fig, ax = subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    pos = np.arange(len(names))
    for i, (key, color) in enumerate((("before", "tab:red"), ("after", "tab:blue"))):
        if key not in data:
            continue
        vals = [np.maximum(np.asarray(data[key][n]), 1e-8) for n in names]
        bp = ax.boxplot(vals, positions=pos + (i - 0.5) * 0.35, widths=0.3, patch_artist=True, whis=(0, 100))
        for patch in bp["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.plot([], [], color=color, lw=6, alpha=0.5, label=f"{key} CLE")
    ax.set_yscale("log")
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("max |w| per output channel")
    ax.set_title("Per-channel weight ranges (whiskers: min to max)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return data


def plot_sensitivity(sensitivity: dict, path, parameters: dict | None = None) -> dict:
    """Saves grouped bars: the score drop of each layer alone at each weight width.

    Args:
        sensitivity: ``{layer name: {bits: drop}}``, as ``keras_eff.quantization.layer_sensitivity`` returns it
            (or ``MixedPrecisionResult.sensitivity``).
        path: The image file to write.
        parameters: ``{layer name: number of weights}`` to print under each name
            (``MixedPrecisionResult.parameters``); None: names only.

    Returns:
        ``{"sensitivity": {layer: {"bits": drop}}}``, JSON-ready.

    Example:
        ```python
        mp = keras_eff.quantization.mixed_precision(model, x_cal, eval_fn, target_average_bits=5)
        keras_eff.ptq.plot_sensitivity(mp.sensitivity, "sensitivity.png", mp.parameters)
        ```
    """
    names = list(sensitivity)
    widths = sorted({b for v in sensitivity.values() for b in v}, reverse=True)
    fig, ax = subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.8))
    step = 0.8 / max(1, len(widths))
    for i, b in enumerate(widths):
        ax.bar(
            np.arange(len(names)) + i * step - 0.4 + step / 2,
            [sensitivity[n].get(b, np.nan) for n in names],
            width=step,
            label=f"{b}-bit",
        )
    labels = [f"{n}\n({parameters[n]:,})" if parameters else n for n in names]
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("score drop (this layer alone)")
    ax.set_title("Per-layer weight sensitivity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return {"sensitivity": {n: {str(b): float(d) for b, d in v.items()} for n, v in sensitivity.items()}}


def _tflite_tensor_for(outputs, wrapper_name, size, scale) -> int | None:
    """Index of the TFLite op output that holds a wrapper's output.

    The candidates are the op outputs whose names mention the wrapper (TFLite names hold 'model/quant_conv_1/...')
    and that hold ``size`` values per sample. Names alone are ambiguous ('quant_act_1/' is also the traced name of
    'quant_act' in a model that has both, and an op that fuses a wrapper into a later one carries both names), so the
    one on the wrapper's own grid (``scale``) is taken, else the last candidate.
    """
    pattern = re.compile(rf"(^|/){re.escape(wrapper_name)}(_\d+)?/")
    candidates = [
        (idx, s) for idx, name, n, s in outputs if n == size and any(pattern.search(p) for p in name.split(";"))
    ]
    on_grid = [idx for idx, s in candidates if s is not None and abs(s - scale) <= 1e-6 * scale]
    if on_grid:
        return on_grid[-1]
    return candidates[-1][0] if candidates else None


def divergence(
    quantized_model, data, tflite_model=None, samples: int = 16, tolerance_lsb: float = 2.0, path=None
) -> dict:
    """Measures, per quantized layer, how far the int8 TFLite tensor lies from the simulation, in output LSBs, and
    finds the first layer that drifts beyond ``tolerance_lsb``.

    Runs LiteRT without delegates, keeping every intermediate tensor (XNNPACK keeps none), and the simulation with
    the integer arithmetic of those same kernels: LiteRT's built-in kernels, or its reference kernels where the model
    emulates TFLite Micro's (``set_integer_kernels``); the model's own setting is put back afterwards. TFLite tensors
    are matched to the top-level quantized layers by the wrapper names in their names, their size and the wrapper's
    output grid.

    Args:
        quantized_model: A quantized model (``keras_eff.quantize_model``), calibrated or trained. Not changed.
        data: Inputs, in any form ``keras_eff.calibrate`` takes; the first ``samples`` are run.
        tflite_model: The int8 TFLite file (path or bytes) to compare; None: converted from ``quantized_model``.
        samples: How many inputs to run, one at a time.
        tolerance_lsb: The largest difference, in output LSBs, not counted as a drift.
        path: An image file for a bar chart of the maximum and mean difference per layer; None: no plot.

    Returns:
        ``{"layers": [{"layer", "tflite_tensor", "max_lsb", "mean_lsb", "share_off"}, ...], "first_drift": name or
        None, "tolerance_lsb": ..., "samples": ...}``, the layers in execution order.

    Raises:
        ValueError: If no TFLite tensor matches a quantized layer by name, or ``data`` does not match the model's
            input.
        InvalidTFLiteModel: If ``tflite_model`` is not a readable TFLite file.

    Example:
        ```python
        result = keras_eff.ptq.divergence(q, x_cal, path="divergence.png")
        print(result["first_drift"])
        ```
    """
    x = common.check_data(quantized_model, data, "divergence data", samples)
    model_bytes = te.read_model(tflite_model) if tflite_model is not None else te.to_tflite(quantized_model)
    # read first: a damaged file is refused naming it (and the bad tensor) before LiteRT's own readers trip on it
    graph = te.read_graph(tflite_model if tflite_model is not None else model_bytes)
    every = list(quantized_model._flatten_layers(include_self=False, recursive=True))
    emulating = {layer: layer.integer_kernels for layer in every if hasattr(layer, "integer_kernels")}
    micro = "micro" in emulating.values()
    interp = Interpreter(
        model_content=model_bytes,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF
        if micro
        else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    inp = interp.get_input_details()[0]
    shape = list(inp["shape"])
    shape[0] = 1
    interp.resize_tensor_input(inp["index"], shape)
    interp.allocate_tensors()
    outputs = []
    for op in graph.ops:
        for t in op.outputs:
            dims = list(graph.tensors[t].shape)
            scales = graph.tensors[t].scales
            size = int(np.prod(dims[1:])) if dims else 1
            outputs.append((t, graph.tensors[t].name, size, float(scales[0]) if len(scales) else None))
    wrappers = [w for w in quantized_model.layers if hasattr(w, "output_quantizer") and w.output_quantizer]
    matched = [
        (
            w,
            _tflite_tensor_for(
                outputs,
                w.name,
                int(np.prod(tensors_in(quantized_model, w, "output").shape[1:])),
                float(w.output_quantizer.tflite_scale()),
            ),
        )
        for w in wrappers
    ]
    matched = [(w, t) for w, t in matched if t is not None]
    if not matched:
        raise ValueError("no TFLite tensor could be matched to a quantized layer by name")
    probe = keras.Model(quantized_model.input, [tensors_in(quantized_model, w, "output") for w, _ in matched])
    for layer in emulating:
        layer.integer_kernels = "micro" if micro else "builtin"
    try:
        sim = probe.predict(x, verbose=0, batch_size=len(x))
    finally:
        for layer, kernels in emulating.items():
            layer.integer_kernels = kernels
    sim = sim if isinstance(sim, list) else [sim]
    diffs: list[list[np.ndarray]] = [[] for _ in matched]  # per layer: |TFLite - simulated| in LSB, per input
    in_scale, in_zp = inp["quantization"]
    for i in range(len(x)):
        interp.set_tensor(inp["index"], te.quantize(x[i : i + 1], in_scale, in_zp, inp["dtype"]))
        interp.invoke()
        for j, (_, t) in enumerate(matched):
            info = graph.tensors[t]
            scale, zp = float(info.scales[0]), int(info.zero_points[0])
            tfl = te.dequantize(interp.get_tensor(t), scale, zp)
            diffs[j].append(np.abs(tfl.reshape(-1) - sim[j][i].reshape(-1)) / scale)
    rows = []
    first = None
    for (w, t), parts in zip(matched, diffs):
        d = np.concatenate(parts)
        row = {
            "layer": w.layer.name,
            "tflite_tensor": graph.tensors[t].name.split(";")[0],
            "max_lsb": float(d.max()),
            "mean_lsb": float(d.mean()),
            "share_off": float(np.mean(d > 0.5)),
        }
        rows.append(row)
        if first is None and row["max_lsb"] > tolerance_lsb:
            first = w.layer.name
    result = {"layers": rows, "first_drift": first, "tolerance_lsb": tolerance_lsb, "samples": len(x)}
    if path is not None:
        fig, ax = subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 3.6))
        pos = np.arange(len(rows))
        ax.bar(pos - 0.2, [r["max_lsb"] for r in rows], width=0.4, label="max")
        ax.bar(pos + 0.2, [r["mean_lsb"] for r in rows], width=0.4, label="mean")
        ax.axhline(tolerance_lsb, color="tab:red", ls="--", lw=1, label=f"tolerance {tolerance_lsb} LSB")
        ax.set_xticks(pos)
        ax.set_xticklabels([r["layer"] for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("|TFLite − simulation| (output LSB)")
        ax.set_title("Simulation vs int8 TFLite, layer by layer" + (f" (first drift: {first})" if first else ""))
        ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_savefig(fig, path, dpi=110)
    return result
