"""Reading and writing files, for every package of keras-eff: one place for the guarantees below.

Writing (:func:`atomic_write`, :func:`atomic_write_json`, :func:`atomic_write_npz`, :func:`atomic_savefig`,
:func:`staged_path`, :func:`write_files`):

- A reader never sees half a file: each file is written to a temporary file beside its target,
  ``.NAME.PID.RANDOM.tmp``, flushed to disk, and renamed into place.
- A new file gets mode ``0666 & ~umask``, as ``open()`` would give it; a replaced file keeps its mode.
- :func:`write_files` writes several files all or none. Without ``overwrite`` an existing target is an error raised
  before anything is written; with it, the files it replaces are kept (hard-linked) until every rename has
  succeeded, and put back if one fails.
- A failure (an exception, Ctrl-C, or SIGTERM under :func:`cleanup_on_termination`, which the ``keras-eff`` command
  line uses) removes the temporary files and puts back what was replaced. SIGKILL cannot be handled: a temporary file
  left by a killed process is removed by the next write to the same target, once its process is no longer running on
  this machine or it is older than :data:`STALE_TEMP_AGE_S`.
- Path problems are ``OSError`` subclasses whose message names the path and what to do
  (``FileExistsError``, ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``; ``OSError`` for a full
  disk), with ``errno`` set.

Reading (:func:`read_json`, :func:`read_yaml_or_json`): documents only, never unpickled; errors name the file.

This module imports nothing heavy (no TensorFlow, NumPy only where an array is written), so command lines and
benchmarks can use it at start-up.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import json
import os
import re
import secrets
import shutil
import signal
import stat
import threading
import time
from pathlib import Path
from typing import TypeVar

STALE_TEMP_AGE_S = 3600.0
"""A temporary file of ours this old (seconds) is stale whatever its process: the next write to its target removes
it."""

_BYTES = (bytes, bytearray, memoryview)
_Bytes = bytes | bytearray | memoryview  # what a file's content may be given as, besides str
_E = TypeVar("_E", bound=OSError)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}
_staged: set[str] = set()  # temporary files (and backups) this process has made and not yet renamed or removed
_staged_lock = threading.Lock()
_critical = threading.local()  # depth of sections (renames, restores) that a termination signal must not cut
_pending_signal: list[int] = []


class Terminated(BaseException):
    """Raised in the main thread when a signal handled by :func:`cleanup_on_termination` arrives (like
    KeyboardInterrupt for Ctrl-C): the writes in progress clean up on the way out."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


# --- errors ------------------------------------------------------------------------------------------------------


def _os_error(cls: type[_E], code: int | None, message: str) -> _E:
    """An OSError whose str() is ``message`` (which names the path) and whose ``errno`` is set. (``filename`` stays
    unset: with it, str() would read ``[Errno N] None: 'path'``.)"""
    err = cls(message)
    err.errno = code
    return err


_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "the file name is too long",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
_WRITE_ADVICE = {
    errno.EACCES: "choose a location you can write to, or change its permissions",
    errno.EPERM: "choose a location you can write to, or change its permissions",
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EISDIR: "choose a file name",
    errno.ENOTDIR: "choose another location",
}


def _first_non_folder(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (itself included) that is not a folder, or None."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return None if p.is_dir() else p
    return None


def describe_os_error(err: OSError, action: str = "access") -> str:
    """A one-line message for an OSError that names the path (and, for ``action`` "write", what to do): ``cannot
    write out/m.tflite: permission denied; choose a location you can write to, ...``. Errors raised by this module
    already read like that and are returned as they are."""
    if err.strerror is None and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # one of ours (see _os_error), or a message without a path: nothing to add
    path = err.filename
    if path is None:
        return str(err)
    if err.errno == errno.ENOTDIR:
        culprit = _first_non_folder(Path(path).parent)
        if culprit is not None:
            return f"cannot {action} {path}: {culprit} is a file, not a folder; choose another location"
    code = -1 if err.errno is None else err.errno  # -1: no errno, in neither table
    reason = _REASONS.get(code) or (err.strerror or str(err)).lower()
    advice = _WRITE_ADVICE.get(code) if action in ("write", "create the folder") else None
    return f"cannot {action} {path}: {reason}" + (f"; {advice}" if advice else "")


def _naming_target(err: OSError, target: Path, action: str = "write") -> OSError:
    """``err`` re-made to name ``target`` (not the temporary file), of the same type."""
    if err.strerror is None and len(err.args) == 1:
        return err  # already a message (ours)
    return _os_error(type(err), err.errno, describe_os_error(_with_filename(err, target), action))


def _with_filename(err: OSError, target: Path) -> OSError:
    copy = OSError(err.errno, err.strerror or str(err))
    copy.filename = str(target)
    return copy


# --- temporary files ------------------------------------------------------------------------------------------------

# ours: .NAME.PID.HEX8.tmp[.suffix]; before PIDs were in the name: .NAME.XXXXXXXX.tmp (tempfile.mkstemp)
_TEMP_TAIL = re.compile(r"^(?:(?P<pid>\d+)\.[0-9a-f]{8}|[a-z0-9_]{8})\.tmp(?:\.[A-Za-z0-9]{1,10})?$")


def _register(path) -> None:
    with _staged_lock:
        _staged.add(str(path))


def _unregister(path) -> None:
    with _staged_lock:
        _staged.discard(str(path))


def _remove(path) -> None:
    """Removes a temporary file of ours, quietly (it may never have been created)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return  # left for the next write's sweep
    _unregister(path)


def remove_staged_temps() -> list:
    """Removes every temporary file this process has staged and not yet renamed: what a signal handler or an exit
    hook calls. Returns the paths removed."""
    with _staged_lock:
        paths = sorted(_staged)
    for p in paths:
        _remove(p)
    return [Path(p) for p in paths]


atexit.register(remove_staged_temps)  # what a thread abandoned when the interpreter exits


def _temp_path(target: Path, suffix: str = "") -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def sweep_stale_temps(target) -> list:
    """Removes stale temporary files of ``target`` (``.NAME.*.tmp`` beside it) left by a killed process: those whose
    process no longer runs on this machine, those of this process it no longer tracks, and any older than
    :data:`STALE_TEMP_AGE_S`. Files not named like our temporary files are never touched. Returns the paths removed."""
    target = Path(target)
    prefix = f".{target.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix):
            continue
        m = _TEMP_TAIL.match(name[len(prefix) :])
        if m is None:
            continue
        path = os.path.join(target.parent, name)
        with _staged_lock:
            if path in _staged:
                continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(m["pid"]) if m["pid"] else None
        stale = age > STALE_TEMP_AGE_S or (pid is not None and (pid == os.getpid() or not _pid_running(pid)))
        if stale:
            try:
                os.unlink(path)
                removed.append(Path(path))
            except OSError:
                pass
    return removed


def _new_temp(target: Path, suffix: str = "") -> tuple[int, Path]:
    """Creates a temporary file beside ``target`` with mode 0666 & ~umask (as open() does); registered before it
    exists, so that a signal between the two still finds it."""
    for _ in range(100):
        tmp = _temp_path(target, suffix)
        _register(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            _unregister(tmp)
            continue
        except BaseException:
            _unregister(tmp)
            raise
        return fd, tmp
    raise _os_error(FileExistsError, errno.EEXIST, f"cannot create a temporary file beside {target}")


def _kept_mode(target: Path) -> int | None:
    """The permission bits of an existing ``target`` (followed if a link), which its replacement keeps."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except OSError:
        return None


def _as_bytes(data, target: Path) -> _Bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, _BYTES):
        return data
    raise TypeError(f"cannot write {target}: the data is a {type(data).__name__}; give bytes or str")


def _stage(target: Path, data: _Bytes) -> Path:
    """``data`` written and flushed to a new temporary file beside ``target``, with the mode ``target`` keeps."""
    try:
        fd, tmp = _new_temp(target)
    except OSError as err:
        raise _naming_target(err, target) from None
    try:
        mode = _kept_mode(target)
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError):
            raise _naming_target(err, target) from None
        raise
    return tmp


def _backup(target: Path) -> Path | None:
    """A second name for an existing ``target`` (a hard link; a copy where links are not supported), so that it can
    be put back; None if there is nothing to keep."""
    if not os.path.lexists(target):
        return None
    for _ in range(100):
        bak = _temp_path(target)
        _register(bak)
        try:
            if os.path.islink(target):
                os.symlink(os.readlink(target), bak)
            else:
                try:
                    os.link(target, bak, follow_symlinks=False)
                except FileExistsError:
                    raise
                except OSError:  # no hard links on this file system
                    shutil.copy2(target, bak)
            return bak
        except FileExistsError:
            _unregister(bak)
            continue
        except BaseException:
            _remove(bak)
            raise
    raise _os_error(FileExistsError, errno.EEXIST, f"cannot create a backup beside {target}")


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Renames ``tmp`` to ``target``; without ``overwrite``, never over a file that appeared since the check."""
    if overwrite:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise _exists_error([target]) from None
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            os.replace(tmp, target)  # no hard links here: rename (the check before staging stands)
        else:
            os.unlink(tmp)
    _unregister(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- checks before writing ----------------------------------------------------------------------------------------


def _exists_error(existing) -> FileExistsError:
    names = ", ".join(str(p) for p in existing)
    return _os_error(
        FileExistsError,
        errno.EEXIST,
        f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --force (overwrite=True) to "
        f"replace, or choose another output location",
    )


def check_targets(paths, overwrite: bool = False) -> list:
    """Checks, before any work, that the files ``paths`` can be written where they are: every existing ancestor
    folder is a folder and the nearest one writable, no target is a folder, and (without ``overwrite``) none exists.

    Raises the error the write would raise, naming the path: ``NotADirectoryError`` (a file where a folder is
    needed), ``IsADirectoryError``, ``PermissionError``, ``FileExistsError``. Returns the paths as ``Path`` objects.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        culprit = _first_non_folder(path.parent)
        if culprit is not None:
            raise _os_error(
                NotADirectoryError,
                errno.ENOTDIR,
                f"cannot write {path}: {culprit} is a file, not a folder; choose another output location",
            )
        if path.is_dir():
            raise _os_error(
                IsADirectoryError, errno.EISDIR, f"cannot write {path}: it is a folder, not a file; choose another name"
            )
        folder = next(p for p in (path.parent, *path.parent.parents) if os.path.lexists(p) or p == Path(p.anchor))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _os_error(
                PermissionError,
                errno.EACCES,
                f"cannot write {path}: permission denied in {folder}; choose a location you can write to, "
                f"or change its permissions",
            )
    if not overwrite:
        existing = [p for p in paths if os.path.lexists(p)]
        if existing:
            raise _exists_error(existing)
    return paths


def check_output_folder(folder) -> Path:
    """Checks that ``folder`` is a folder (or can be made one) that can be written: the same errors as
    :func:`check_targets`."""
    folder = Path(folder)
    culprit = _first_non_folder(folder)
    if culprit is not None:
        raise _os_error(
            NotADirectoryError,
            errno.ENOTDIR,
            f"cannot write to {folder}: {culprit} is a file, not a folder; choose another output folder",
        )
    nearest = next(p for p in (folder, *folder.parents) if os.path.lexists(p) or p == Path(p.anchor))
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise _os_error(
            PermissionError,
            errno.EACCES,
            f"cannot write to {folder}: permission denied in {nearest}; "
            f"choose a folder you can write to, or change its permissions",
        )
    return folder


# --- writing ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _uninterrupted():
    """Renames and restores: a signal under :func:`cleanup_on_termination` waits until the files are consistent."""
    _critical.depth = getattr(_critical, "depth", 0) + 1
    try:
        yield
    finally:
        _critical.depth -= 1
    if _critical.depth == 0 and _pending_signal and threading.current_thread() is threading.main_thread():
        raise Terminated(_pending_signal.pop())


def write_files(out_dir, files: dict, overwrite: bool = False) -> list:
    """Writes several files under ``out_dir``, all or none.

    Every file is first written to a temporary file beside its target; only when all are written are they renamed
    into place. Without ``overwrite`` an existing target is an error raised before anything is written. With it, the
    files being replaced are kept until every rename has succeeded; if one fails, those already replaced are put back
    and new ones removed. On failure the temporary files, and the folders this call created, are removed. New files
    get mode ``0666 & ~umask``; a replaced file keeps its mode.

    Args:
        out_dir: The folder the names are relative to; created when missing.
        files: ``{name: contents}``, names relative to ``out_dir`` (subfolders allowed), contents bytes or str
            (written as UTF-8).
        overwrite: Replace existing files; False makes an existing target an error.

    Returns:
        The paths written (``pathlib.Path``), in the order of ``files``.

    Raises:
        FileExistsError: If a target exists and not ``overwrite`` (nothing is written).
        OSError: If a folder or file cannot be written; the message names the path, and nothing is left changed.

    Example:
        ```python
        tflite_export.write_files("build/kws", {"model.tflite": tflite_bytes, "model.cc": c_source})
        ```
    """
    out_dir = Path(out_dir)
    targets = {out_dir / name: data for name, data in files.items()}
    check_targets(targets, overwrite)
    payload = {path: _as_bytes(data, path) for path, data in targets.items()}
    created, staged, backups, done = [], {}, {}, []
    try:
        for path in targets:
            missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
            for d in reversed(missing):
                try:
                    d.mkdir()
                except OSError as err:
                    raise _naming_target(err, d, "create the folder") from None
                created.append(d)
        for path in targets:
            sweep_stale_temps(path)
        for path, data in payload.items():
            staged[path] = _stage(path, data)
        with _uninterrupted():
            try:
                if overwrite:
                    for path in targets:
                        backups[path] = _backup(path)
                for path, tmp in staged.items():
                    try:
                        _commit(tmp, path, overwrite)
                    except OSError as err:
                        raise _naming_target(err, path) from None
                    done.append(path)
            except BaseException:
                _restore(done, backups)
                raise
    except BaseException:
        for tmp in list(staged.values()) + [b for b in backups.values() if b is not None]:
            _remove(tmp)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    for bak in backups.values():
        if bak is not None:
            _remove(bak)
    for folder in {p.parent for p in targets}:
        _fsync_folder(folder)
    return list(targets)


def _restore(done: list, backups: dict) -> None:
    """Puts back the files replaced so far (from their backups) and removes the new ones."""
    for path in reversed(done):
        try:
            if backups.get(path) is not None:
                os.replace(backups[path], path)
                _unregister(backups[path])
            else:
                os.unlink(path)
        except OSError:
            pass  # nothing better to do: the original error is raised


def atomic_write(path, data, overwrite: bool = True) -> Path:
    """Writes one file atomically: through a temporary file in the same folder, then a rename.

    A reader sees the old file or the new one, never half of one, and a failure leaves the old file in place. Modes as
    in :func:`write_files`.

    Args:
        path: The file to write; missing parent folders are created.
        data: The contents: bytes, or str (written as UTF-8).
        overwrite: Replace an existing file; False makes an existing file an error.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        FileExistsError: If ``path`` exists and not ``overwrite``.
        OSError: If the folder or file cannot be written (the message names the path).

    Example:
        ```python
        tflite_export.atomic_write("build/model.tflite", tflite_bytes)
        ```
    """
    path = Path(path)
    return write_files(path.parent, {path.name: data}, overwrite=overwrite)[0]


def atomic_write_json(path, obj, overwrite: bool = True) -> Path:
    """Writes ``obj`` as indented JSON with :func:`atomic_write`.

    Args:
        path: The ``.json`` file to write.
        obj: JSON-serializable data; NumPy scalars and arrays and paths are converted.
        overwrite: Replace an existing file.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        TypeError: If ``obj`` holds something JSON cannot represent.
        FileExistsError: If ``path`` exists and not ``overwrite``.
    """
    return atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n", overwrite=overwrite)


def atomic_write_npz(path, arrays: dict, overwrite: bool = True) -> Path:
    """Writes NumPy arrays as an ``.npz`` file (``numpy.savez``) with :func:`atomic_write`.

    Args:
        path: The ``.npz`` file to write.
        arrays: ``{name: array}``.
        overwrite: Replace an existing file.

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    import numpy as np  # noqa: PLC0415 - start-up: NumPy (70-100 ms) only where an array is written

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path, buf.getvalue(), overwrite=overwrite)


def atomic_write_npy(path, array, overwrite: bool = True) -> Path:
    """Writes one NumPy array as a ``.npy`` file (``numpy.save``, no pickle) with :func:`atomic_write`.

    Args:
        path: The ``.npy`` file to write.
        array: The array (object arrays are refused: no pickle).
        overwrite: Replace an existing file.

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    import numpy as np  # noqa: PLC0415 - start-up: NumPy (70-100 ms) only where an array is written

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write(path, buf.getvalue(), overwrite=overwrite)


def atomic_savefig(fig, path, overwrite: bool = True, **savefig_kwargs) -> Path:
    """Saves a matplotlib figure atomically: rendered in memory, then written with :func:`atomic_write`.

    Args:
        fig: A ``matplotlib.figure.Figure``.
        path: The image file; its suffix picks the format unless ``format=`` is given.
        overwrite: Replace an existing file.
        **savefig_kwargs: Passed to ``fig.savefig`` (``dpi``, ``bbox_inches``, ``format``, ...).

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    buf = io.BytesIO()
    fig.savefig(buf, **savefig_kwargs)
    return atomic_write(path, buf.getvalue(), overwrite=overwrite)


@contextlib.contextmanager
def staged_path(path, overwrite: bool = True):
    """A temporary file name beside ``path``, renamed to ``path`` when the block succeeds.

    For writers that want a file name (``model.save``, an external tool). The mode rules of :func:`atomic_write`
    apply; the temporary file is removed when the block fails.

    Args:
        path: The file the block's output becomes.
        overwrite: Replace an existing file.

    Returns:
        A context manager yielding the temporary path (same suffix as ``path``).

    Raises:
        FileExistsError: If ``path`` exists and not ``overwrite`` (before the block runs).
        FileNotFoundError: If the block wrote nothing to the temporary path.

    Example:
        ```python
        with tflite_export.staged_path("out/model.keras") as tmp:
            model.save(tmp)
        ```
    """
    path = Path(path)
    check_targets([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    tmp = _temp_path(path, path.suffix)
    _register(tmp)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {path}")
        mode = _kept_mode(path)
        if mode is None:
            umask = _umask()
            mode = 0o666 & ~umask if umask is not None else None
        if mode is not None:
            os.chmod(tmp, mode)
        with _uninterrupted():
            try:
                _commit(tmp, path, overwrite)
            except OSError as err:
                raise _naming_target(err, path) from None
    finally:
        _remove(tmp)


def _umask() -> int | None:
    """The process umask, read without changing it (Linux); None where it cannot be read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _json_default(o):
    import numpy as np  # noqa: PLC0415 - start-up: NumPy (70-100 ms) only where an array is written

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


# --- signals --------------------------------------------------------------------------------------------------------


def _on_signal(signum, frame):
    if getattr(_critical, "depth", 0) > 0:
        _pending_signal.append(signum)  # raised when the renames or restores in progress are done
        return
    raise Terminated(signum)


@contextlib.contextmanager
def cleanup_on_termination(signals=(signal.SIGTERM,)):
    """Within the block, ``signals`` (SIGTERM by default) raise :class:`Terminated` in the main thread, so that the
    writes in progress remove their temporary files and put back what they replaced, as for Ctrl-C; on the way out,
    any temporary file still staged is removed. Outside the main thread it only does the latter."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            previous[s] = signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending_signal.clear()
        remove_staged_temps()


# --- reading ------------------------------------------------------------------------------------------------------


def _readable_file(path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise _os_error(IsADirectoryError, errno.EISDIR, f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise _os_error(FileNotFoundError, errno.ENOENT, f"{what} {path} does not exist")
    return path


def read_text(path, what: str = "file") -> str:
    """The text of a UTF-8 file; errors name ``what`` and the path (FileNotFoundError, IsADirectoryError,
    PermissionError, ValueError for bytes that are not UTF-8)."""
    path = _readable_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text ({err})") from None
    except OSError as err:
        raise _naming_target(err, path, "read") from None


def read_json(path, what: str, hint: str = ""):
    """Reads a JSON document, with errors that name the file and what it is.

    Args:
        path: The JSON file.
        what: What the file is, for messages ("DONNA config", "measurement cache").
        hint: Text appended to the corrupt-file message (what to do).

    Returns:
        The parsed document.

    Raises:
        FileNotFoundError: ``"<what> <path> does not exist"``.
        ValueError: ``"<what> <path> is corrupt (not JSON: ...)<hint>"``.
    """
    path = _readable_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is corrupt (not JSON: {err}){hint}") from None
    except OSError as err:
        raise _naming_target(err, path, "read") from None


def read_yaml_or_json(path, what: str):
    """Reads a ``.yaml``/``.yml`` file (YAML's safe loader: plain data only, no Python objects) or a JSON file.

    Args:
        path: The file; its suffix picks the parser.
        what: What the file is, for messages.

    Returns:
        The parsed document.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it cannot be parsed (the message names ``what`` and the file).
    """
    text = read_text(path, what)
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415 - start-up: PyYAML (12-30 ms, -X importtime) only for YAML files

        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: a bad date, say
            raise ValueError(f"{path} is not a readable {what}: {err}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a readable {what}: {err}") from None
