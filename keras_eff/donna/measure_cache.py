"""The on-disk cache of measurements, keyed by architecture and scenario.

One JSON file: ``{"format": ..., "entries": {key: {"arch", "measurer", "ok", "metrics", "error", "seconds"}}}``. The
key hashes the space as the measurer sees it (input size included), the architecture and the measurer's cache key
(its settings and, for latency, the host), so that another thread count, input size or device never reuses a
number. Every new entry rewrites the file atomically: a search killed half-way keeps what it measured.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import metadata
from pathlib import Path

from tflite_export.files import atomic_write, read_json

FORMAT = "keras_eff.donna.MeasurementCache"


def package_version(name: str) -> str | None:
    """The installed version of the distribution ``name`` (None when it is not installed); no import."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def toolchain() -> dict:
    """The versions a measurement depends on whatever the measurer: the converter (TensorFlow) and Keras, which
    build the int8 file."""
    return {
        "tensorflow": package_version("tensorflow") or package_version("tensorflow-cpu"),
        "keras": package_version("keras"),
    }


def measurement_key(space, arch, measurer) -> str:
    """The key of one measurement: the space as measured, the architecture, the measurer's own key (its settings, and
    the runtime's version and host where they matter) and the converter's versions."""
    text = json.dumps(
        {"space": space.get_config(), "arch": str(arch), "measurer": measurer.cache_key(), "toolchain": toolchain()},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "inf": JSON has no infinity
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def _unplain(v):
    if v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, dict):
        return {k: _unplain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unplain(x) for x in v]
    return v


class MeasurementCache:
    """The measurements of architectures, keyed by :func:`measurement_key`, in memory and optionally in a file.

    The key hashes the space as measured (input size included), the architecture, the measurer's cache key (its
    settings, and the host and runtime versions where they matter) and the converter's versions, so that another
    thread count, input size, device or version never reuses a number. With a file, every :meth:`put` rewrites it
    atomically: a search killed half-way keeps what it measured. ``hits`` and ``misses`` count :meth:`get` calls.

    Args:
        path: The JSON file, read now when it exists and written on every new entry; None: memory only.

    Raises:
        ValueError: If ``path`` exists but is not a measurement cache file (corrupt JSON or another format).

    Example:
        ```python
        cache = MeasurementCache("artifacts/donna/measurements.json")
        result = search(space, predictor, scenario, cache=cache)   # a second search measures nothing twice
        len(cache), cache.hits
        ```
    """

    def __init__(self, path=None):
        self.path = None if path is None else Path(path)
        self.entries = {}
        self.hits = self.misses = 0
        if self.path is not None and self.path.exists():
            doc = read_json(self.path, "measurement cache", "; delete it to measure again")
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("entries"), dict):
                raise ValueError(f"{self.path} is not a measurement cache file (format {FORMAT!r} expected)")
            self.entries = {k: _unplain(v) for k, v in doc["entries"].items()}

    def get(self, key: str):
        """The entry of ``key``, counting a hit or a miss.

        Args:
            key: A :func:`measurement_key`.

        Returns:
            The entry (``{"arch", "measurer", "ok", "metrics", "error", "seconds"}``), or None.
        """
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: dict) -> None:
        """Stores an entry and rewrites the file (when there is one).

        Args:
            key: A :func:`measurement_key`.
            entry: The measurement (JSON-serializable; infinite values are written as ``"inf"``).

        Returns:
            None.
        """
        self.entries[key] = entry
        self.save()

    def save(self) -> None:
        """Writes every entry to the file atomically (nothing without a file).

        Returns:
            None.
        """
        if self.path is None:
            return

        doc = {"format": FORMAT, "entries": _plain(self.entries)}
        atomic_write(self.path, json.dumps(doc, indent=0, sort_keys=True) + "\n")

    def __len__(self):
        return len(self.entries)
