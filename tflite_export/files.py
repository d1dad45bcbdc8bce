"""Writing files atomically: a reader never sees half a file, and a failure leaves the old file in place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, data, overwrite: bool = True) -> Path:
    """Writes ``data`` (bytes or str) to ``path`` through a temporary file in the same folder and a rename."""
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
