"""A model report for deployment, as markdown and JSON: size, parameters, MACs, ops, TFLite Micro support, arena,
LiteRT latency int8 vs float, and the TFLite Micro vs LiteRT check."""

from __future__ import annotations

import datetime
import gzip
import json
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .arena import DEFAULT_MARGIN, find_arena_size
from .checks import describe_float_ops, find_float_islands, float_ops
from .errors import MicroRuntimeError
from .files import write_files
from .macs import count_macs
from .micro_check import check_micro, head_of_inputs
from .micro_ops import probe_micro_ops
from .model_file import read_graph, read_model
from .runtime import compare_latency


def _versions() -> dict:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("tensorflow", "ai-edge-litert", "tflite-micro"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass
class ModelReport:
    """A deployment report of a TFLite model, as made by ``model_report``; rendered as markdown or JSON.

    Attributes:
        name: The model's name, for the title.
        data: The measurements: ``summary`` (file and gzip size, parameters, MACs, input and output), ``ops``,
            ``unsupported_micro_ops``, ``macs_per_op``, ``float_islands``, and when measured ``arena``, ``latency``
            and ``micro_check``; then ``warnings``, ``versions`` and ``date``.
    """

    name: str
    data: dict = field(default_factory=dict)

    @property
    def warnings(self) -> list:
        """What stands in the way of deployment (missing TFLite Micro ops, float islands, TFLite Micro failures)."""
        return self.data.get("warnings", [])

    def as_dict(self) -> dict:
        """The report as a JSON-ready dict.

        Returns:
            ``{"name": name, **data}``.
        """
        return {"name": self.name, **self.data}

    def to_json(self) -> str:
        """The report as indented JSON text.

        Returns:
            ``as_dict()`` as JSON, ending with a newline.
        """
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        """The report as markdown: warnings, a summary table, the ops and the MACs per op.

        Returns:
            The markdown text.
        """
        d = self.data
        md = [f"# Model report: {self.name}", ""]
        for w in d["warnings"]:
            md.append(f"> **Warning:** {w}")
        if d["warnings"]:
            md.append("")
        s = d["summary"]
        md += ["| | |", "|---|---|"]
        md += [
            f"| {k} | {v} |"
            for k, v in (
                ("TFLite file", f"{s['file_bytes']:,} bytes"),
                ("gzip -9", f"{s['gzip_bytes']:,} bytes"),
                ("parameters (conv and dense weights, biases)", f"{s['parameters']:,}"),
                ("MACs per inference", f"{s['macs']:,}"),
                ("input", s["input"]),
                ("output", s["output"]),
            )
        ]
        arena = d.get("arena")
        if arena and "host_min_bytes" in arena:
            md.append(
                f"| tensor arena | {arena['recommended_bytes']:,} bytes recommended (host minimum "
                f"{arena['host_min_bytes']:,} + {arena['margin']:.0%} margin) |"
            )
        elif arena:
            md.append(f"| tensor arena | not found: {arena['error']} |")
        lat = d.get("latency")
        if lat:
            for k, v in lat.items():
                md.append(
                    f"| LiteRT latency, {k} | {v['median_us']:.1f} µs median (rounds {v['min_us']:.1f}–"
                    f"{v['max_us']:.1f}) |"
                )
            if "int8" in lat and "float" in lat:
                md.append(f"| int8 speed-up over float | {lat['float']['median_us'] / lat['int8']['median_us']:.2f}× |")
        chk = d.get("micro_check")
        if chk and "n" in chk:
            lsb = (
                f"max {chk['max_lsb_diff']} LSB"
                if chk["max_lsb_diff"] is not None
                else f"max diff {chk['max_abs_diff']:.3g}"
            )
            md.append(
                f"| TFLite Micro vs {chk['reference']} | {chk['bit_exact_samples']:.1%} of {chk['n']} samples "
                f"bit-exact, {lsb}, argmax agreement {chk['argmax_agreement']:.1%} |"
            )
        elif chk:
            md.append(f"| TFLite Micro vs LiteRT | failed: {chk['error']} |")
        md += ["", "## Ops", "", "| op | count | MACs | TFLite Micro |", "|---|---:|---:|---|"]
        for op in d["ops"]:
            md.append(f"| {op['op']} | {op['count']} | {op['macs']:,} | {'yes' if op['micro'] else '**no**'} |")
        md += ["", "## MACs per op", "", "| # | op | output shape | MACs | parameters |", "|---:|---|---|---:|---:|"]
        for o in d["macs_per_op"]:
            md.append(f"| {o['index']} | {o['op']} | {tuple(o['output_shape'])} | {o['macs']:,} | {o['params']:,} |")
        if arena and "note" in arena:
            md += ["", f"Arena: {arena['note']}"]
        md += ["", "_" + ", ".join(f"{k} {v}" for k, v in d["versions"].items()) + f"; {d['date']}._", ""]
        return "\n".join(md)

    def write(self, stem, overwrite: bool = False) -> list:
        """Writes ``STEM.md`` and ``STEM.json`` together, both or neither (see ``write_files``).

        Args:
            stem: The path of the files without their suffix, e.g. ``"build/report"``; its folder is created when
                missing.
            overwrite: Replace files that exist; without it an existing file is an error raised before anything is
                written.

        Returns:
            The two paths written, as ``pathlib.Path`` objects.

        Raises:
            FileExistsError: If a file exists and not ``overwrite``.
            OSError: If a file cannot be written; nothing is left behind then.
        """
        stem = Path(stem)
        return write_files(
            stem.parent,
            {f"{stem.name}.md": self.to_markdown(), f"{stem.name}.json": self.to_json()},
            overwrite=overwrite,
        )


def _describe(t) -> str:
    q = f", scale {float(t.scales[0]):.6g}, zero point {int(t.zero_points[0])}" if t.scales.size == 1 else ""
    return f"{t.dtype.name} {tuple(t.shape)}{q}"


def model_report(
    model,
    float_model=None,
    x=None,
    name: str = "model",
    latency_runs: int = 200,
    latency_rounds: int = 3,
    arena: bool = True,
    margin: float = DEFAULT_MARGIN,
    check_samples: int = 200,
    package=None,
) -> ModelReport:
    """Measures what deploying an int8 TFLite model costs, for a report in markdown and JSON.

    The report holds the file and gzip -9 sizes, parameters and MACs (per op and per op type, from
    ``count_macs``), the input and output quantization, the ops with whether TFLite Micro runs them, float islands,
    the tensor arena estimate, LiteRT latency (int8, and float when given), the TFLite Micro vs LiteRT check, and the
    versions of the runtimes. A TFLite Micro failure in the arena search or the check is recorded as a warning in
    the report, not raised. Nothing is written until ``ModelReport.write``.

    Args:
        model: The int8 TFLite model, as bytes or a path.
        float_model: Its float TFLite model (bytes or a path), for the int8 vs float latency comparison.
        x: Float samples (one array, or a list of arrays for several inputs) for the TFLite Micro vs LiteRT check;
            None skips the check.
        name: The model's name, for the title.
        latency_runs: Inferences per latency round; 0 skips the latency measurement.
        latency_rounds: Interleaved latency rounds (see ``compare_latency``).
        arena: Search for the tensor arena (skipped when TFLite Micro lacks an op of the model).
        margin: The fraction added to the host arena minimum (0.25 is 25 %).
        check_samples: The most samples of ``x`` the check uses.
        package: A `MicroPackage` of the same model, whose arena estimate and check are used instead of measuring
            them again.

    Returns:
        A `ModelReport`.

    Raises:
        ValueError: If ``package`` was built from another model.
        InvalidTFLiteModel: If ``model`` or ``float_model`` is not a loadable TFLite file.

    Example:
        ```python
        report = tflite_export.model_report(int8_bytes, float_model=float_bytes, x=x_test[:200], name="kws")
        print(report.to_markdown())
        report.write("build/report")  # build/report.md, build/report.json
        ```
    """
    data = read_model(model)
    graph = read_graph(data)
    macs = count_macs(data)
    names = graph.op_names()
    support = probe_micro_ops(data, sorted(set(names)))
    warnings = []
    missing = [n for n in dict.fromkeys(names) if not support.get(n)]
    if missing:
        warnings.append(
            f"TFLite Micro cannot run op(s) {', '.join(missing)}: this model will not load on a "
            f"microcontroller; replace the layers that produce them before flashing it."
        )
    islands = find_float_islands(data)
    if islands:
        ops_in_float = float_ops(data)
        first = (
            f"ops computing in float: {describe_float_ops(ops_in_float)}" if ops_in_float else f"first: {islands[0]}"
        )
        warnings.append(
            f"the model is not fully int8 ({len(islands)} place(s); {first}): float ops are slow or "
            f"unavailable on microcontrollers."
        )
    by_type = macs.by_op_type()
    ops = [
        {"op": n, "count": names.count(n), "macs": int(by_type.get(n, 0)), "micro": bool(support.get(n))}
        for n in dict.fromkeys(names)
    ]
    t = graph.tensors
    out = {
        "summary": {
            "file_bytes": len(data),
            "gzip_bytes": len(gzip.compress(data, 9)),
            "parameters": int(macs.total_params),
            "macs": int(macs.total_macs),
            "input": "; ".join(_describe(t[i]) for i in graph.inputs),
            "output": "; ".join(_describe(t[i]) for i in graph.outputs),
        },
        "ops": ops,
        "unsupported_micro_ops": missing,
        "macs_per_op": [
            {
                "index": o.index,
                "op": o.op,
                "output": o.output,
                "output_shape": list(o.output_shape),
                "macs": o.macs,
                "params": o.params,
            }
            for o in macs.ops
        ],
        "float_islands": islands,
    }
    estimate = None
    if package is not None:
        if package.tflite != data:
            raise ValueError("package is the microcontroller package of another model")
        estimate = package.arena
        out["arena"] = estimate.as_dict()
        if package.check is not None:
            out["micro_check"] = package.check.as_dict()
    elif arena and not missing:
        try:
            estimate = find_arena_size(data, margin=margin)
            out["arena"] = estimate.as_dict()
        except MicroRuntimeError as err:
            out["arena"] = {"error": str(err)}
            warnings.append(f"TFLite Micro could not run the model: {err}")
    if latency_runs:
        models = {"int8": data} if float_model is None else {"int8": data, "float": read_model(float_model)}
        out["latency"] = compare_latency(models, runs=latency_runs, rounds=latency_rounds)
    if x is not None and estimate is not None:
        xs = head_of_inputs(x, check_samples)
        try:
            out["micro_check"] = check_micro(data, xs, arena_size=estimate.recommended_bytes).as_dict()
        except MicroRuntimeError as err:
            out["micro_check"] = {"error": str(err)}
            warnings.append(f"TFLite Micro failed on the check inputs: {err}")
    out["warnings"] = warnings
    out["versions"] = _versions()
    out["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return ModelReport(name, out)
