"""Result tables: printed for people, written as markdown and JSON with the versions and the date."""

from __future__ import annotations

import datetime
import platform

from tflite_export.files import atomic_write, atomic_write_json


def versions() -> dict:
    import keras
    import numpy
    import tensorflow

    out = {"python": platform.python_version(), "tensorflow": tensorflow.__version__, "keras": keras.__version__,
           "numpy": numpy.__version__}
    try:
        from importlib.metadata import version

        out["ai-edge-litert"] = version("ai-edge-litert")
        out["keras-eff"] = version("keras-eff")
        out["ethos-u-vela"] = version("ethos-u-vela")
    except Exception:  # metadata missing in an uninstalled checkout
        pass
    return out


def agg_subplots(figsize):
    """A figure and its axes on matplotlib's Agg canvas, outside pyplot: for plots saved to files. The caller's pyplot
    backend (a notebook's inline backend, say) is left alone, and no figure stays open in pyplot's registry (unlike
    ``matplotlib.use("Agg")`` + ``pyplot.subplots``). Save with ``tflite_export.files.atomic_savefig(fig, path)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ver = versions()
    table = markdown_table(rows, columns)
    md = (f"# {title}\n\n{table}\n{notes}\n\n_Measured {now} on {platform.node() or 'this machine'} "
          f"({platform.machine()}); " + ", ".join(f"{k} {v}" for k, v in ver.items()) + "._\n")
    atomic_write(f"{stem}.md", md)
    atomic_write_json(f"{stem}.json", {"title": title, "date": now, "versions": ver, "rows": rows,
                                        "notes": notes, **(extra or {})})
    return table
