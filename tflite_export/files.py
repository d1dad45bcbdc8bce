"""Writing files atomically: a reader never sees half a file, and a failure leaves the old file in place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, data, overwrite: bool = True) -> Path:
    """Writes one file atomically: through a temporary file in the same folder, then a rename.

    A reader never sees half a file, and a failure leaves the old file (if any) in place.

    Args:
        path: The file to write; missing parent folders are created.
        data: The contents: bytes (written as is) or str (written as text).
        overwrite: Replace an existing file; False makes an existing file an error.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        FileExistsError: If ``path`` exists and not ``overwrite``.
        OSError: If the folder or file cannot be written; the temporary file is removed then.

    Example:
        ```python
        tflite_export.atomic_write("build/model.tflite", tflite_bytes)
        ```
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True (--force on the command line) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path, obj, overwrite: bool = True) -> Path:
    """Writes ``obj`` as indented JSON, atomically (see ``atomic_write``).

    Args:
        path: The file to write; missing parent folders are created.
        obj: A JSON-serializable object; numpy scalars and arrays and ``pathlib.Path`` values are converted.
        overwrite: Replace an existing file; False makes an existing file an error.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        TypeError: If ``obj`` holds a value JSON cannot represent.
        FileExistsError: If ``path`` exists and not ``overwrite``.
        OSError: If the folder or file cannot be written.

    Example:
        ```python
        tflite_export.atomic_write_json("build/metrics.json", {"accuracy": np.float32(0.91)})
        ```
    """
    return atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n", overwrite=overwrite)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def write_files(out_dir, files: dict, overwrite: bool = False) -> list:
    """Writes several files under ``out_dir``, all or none: ``files`` maps names (subfolders allowed) to bytes or str.

    Every file is first written to a temporary file beside its target; only when all are written are they renamed
    into place. Without ``overwrite`` an existing target is an error raised before anything is written. On failure the
    temporary files, and the folders this call created, are removed.

    Args:
        out_dir: The folder to write into; created (with any missing parents) when missing.
        files: File name (relative to ``out_dir``, subfolders allowed) -> contents, bytes or str.
        overwrite: Replace files that exist.

    Returns:
        The paths written, as ``pathlib.Path`` objects, in the order of ``files``.

    Raises:
        FileExistsError: If a target exists and not ``overwrite`` (before anything is written).
        OSError: If a folder or file cannot be written.

    Example:
        ```python
        tflite_export.write_files("build", {"model.tflite": tflite_bytes, "notes/README.txt": "int8, batch 1"})
        ```
    """
    out_dir = Path(out_dir)
    targets = {out_dir / name: data for name, data in files.items()}
    if not overwrite:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
                                  f"--force (overwrite=True) to replace, or choose another output folder")
    created, staged = [], []
    try:
        for path in targets:
            missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
            for d in reversed(missing):
                d.mkdir()
                created.append(d)
        for path, data in targets.items():
            mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, mode) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return list(targets)
