"""Reports of what a technique did (``get_report``), and result tables: printed for people, written as markdown and
JSON with the versions and the date.

Two kinds of report (CONTRIBUTING.md). A report that describes a model is computed from the model by a function, so
it is the same after saving and loading (``keras_eff.quantization.quantization_report``, ``sparsity_report``,
``clustering_report``). A report of a process (what ``ptq.equalize``, ``ptq.bias_correction``, ``ptq.adaround`` and
``ptq.auto_quant`` did) is kept for the model the function returned, in this process only, and read with
``get_report(model, kind)``: it is not saved with the model and goes when the model does.
"""

from __future__ import annotations

import datetime
import platform
import weakref
from importlib.metadata import PackageNotFoundError, version

from tflite_export.files import atomic_write, atomic_write_json

# the kinds of process report, and the function that makes each
REPORT_KINDS = {
    "equalization": "keras_eff.ptq.equalize",
    "bias_correction": "keras_eff.ptq.bias_correction",
    "adaround": "keras_eff.ptq.adaround",
    "auto_quant": "keras_eff.ptq.auto_quant",
}

_REPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {kind: report}


class _NoReport(KeyError):
    """A KeyError whose message reads as a sentence (KeyError quotes its argument)."""

    def __str__(self):
        return str(self.args[0])


def _check_kind(kind):
    if kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {kind!r}; the kinds are: {', '.join(REPORT_KINDS)}")


def attach_report(model, kind: str, report) -> None:
    """Keeps ``report`` as ``model``'s report of ``kind`` (the techniques call it on the model they return).

    Args:
        model: The model the technique returns. Not changed: the report is kept beside it, for as long as it lives.
        kind: One of ``REPORT_KINDS``.
        report: The report object; it must not hold ``model`` (that would keep the model alive).

    Returns:
        None.
    """
    _check_kind(kind)
    _REPORTS.setdefault(model, {})[kind] = report


def get_reports(model) -> dict:
    """Reads every report of what a technique did to make ``model``.

    Kept in this process for the model a technique returned (see `get_report`); not saved with the model.

    Args:
        model: A model returned by ``ptq.equalize``, ``ptq.bias_correction``, ``ptq.adaround`` or
            ``ptq.auto_quant`` (its ``.model``). Not changed.

    Returns:
        ``{kind: report}``; empty when no technique left a report for ``model``.

    Example:
        ```python
        q = keras_eff.ptq.adaround(q4, x_cal)
        print(keras_eff.get_reports(q))  # {"adaround": AdaRoundReport(...)}
        ```
    """
    try:
        return dict(_REPORTS.get(model, {}))
    except TypeError:  # not weak-referenceable, so never a key
        return {}


def get_report(model, kind: str):
    """Reads the report of what a technique did to make ``model``.

    Reports of a process are kept for the model the technique returned, in this process only: they are not saved
    with the model, and a copy (or a saved and loaded model) has none. Reports that describe a model are computed
    from it instead, and survive saving: ``keras_eff.quantization.quantization_report(model)``,
    ``keras_eff.sparsity_report(model)``, ``keras_eff.clustering_report(model)``.

    Args:
        model: The model ``ptq.equalize``, ``ptq.bias_correction``, ``ptq.adaround`` or ``ptq.auto_quant``
            returned. Not changed.
        kind: ``"equalization"`` (an `EqualizationReport`), ``"bias_correction"`` (a `BiasCorrectionReport`),
            ``"adaround"`` (an `AdaRoundReport`) or ``"auto_quant"`` (the `AutoQuantResult`, its ``model`` left
            out).

    Returns:
        The report.

    Raises:
        ValueError: If ``kind`` is not one of those.
        KeyError: If ``model`` has no report of that kind (the message says which it has, and which function makes
            one).

    Example:
        ```python
        eq = keras_eff.ptq.equalize(model)
        print(keras_eff.get_report(eq, "equalization"))
        ```
    """
    _check_kind(kind)
    reports = get_reports(model)
    if kind not in reports:
        has = ", ".join(reports) or "none"
        raise _NoReport(
            f"model {getattr(model, 'name', model)!r} has no {kind!r} report (it has: {has}). "
            f"{REPORT_KINDS[kind]} keeps one for the model it returns, in this process; a copy, or a "
            f"model saved and loaded again, has none"
        )
    return reports[kind]


def versions() -> dict:
    # start-up: this module (get_report, markdown tables) loads without TensorFlow (2-9 s, see startup.md in
    # benchmarks/results) or NumPy (70-100 ms, -X importtime); only this function needs them
    import keras  # noqa: PLC0415 - start-up, see above
    import numpy  # noqa: PLC0415 - start-up, see above
    import tensorflow  # noqa: PLC0415 - start-up, see above

    out = {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
    }
    for dist in ("ai-edge-litert", "keras-eff", "ethos-u-vela"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:  # not installed (Vela is optional; an uninstalled checkout has no keras-eff)
            pass
    return out


def agg_subplots(figsize):
    """A figure and its axes on matplotlib's Agg canvas, outside pyplot: for plots saved to files. The caller's pyplot
    backend (a notebook's inline backend, say) is left alone, and no figure stays open in pyplot's registry (unlike
    ``matplotlib.use("Agg")`` + ``pyplot.subplots``). Save with ``tflite_export.files.atomic_savefig(fig, path)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - start-up: matplotlib (~0.4 s)
    from matplotlib.figure import Figure  # noqa: PLC0415 - start-up: matplotlib (~0.4 s) only for plots

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _fmt(v):
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "–" if v is None else str(v)


def markdown_table(rows: list, columns: list | None = None) -> str:
    """Rows (dicts) as a markdown table; ``columns`` picks and orders the keys."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(stem, title: str, rows: list, columns=None, notes: str = "", extra: dict | None = None) -> str:
    """Writes ``stem.md`` and ``stem.json`` (atomically) and returns the markdown table."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ver = versions()
    table = markdown_table(rows, columns)
    md = (
        f"# {title}\n\n{table}\n{notes}\n\n_Measured {now} on {platform.node() or 'this machine'} "
        f"({platform.machine()}); " + ", ".join(f"{k} {v}" for k, v in ver.items()) + "._\n"
    )
    atomic_write(f"{stem}.md", md)
    atomic_write_json(
        f"{stem}.json", {"title": title, "date": now, "versions": ver, "rows": rows, "notes": notes, **(extra or {})}
    )
    return table
