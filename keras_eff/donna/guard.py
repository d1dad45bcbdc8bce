"""Calls with a deadline, so that a measurer that crashes or hangs fails one candidate instead of the search.

``isolation="thread"`` runs the call in a daemon thread: an exception or a timeout fails the call, a hung thread is
abandoned (cheap; a hard crash of native code still takes the process down). ``isolation="process"`` runs it in a
persistent child process (spawned once, reused): a segfault or a hang kills only the child, which is started again
for the next call (robust; the child imports TensorFlow once, a few seconds).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback

ISOLATIONS = ("thread", "process")


class MeasureTimeout(TimeoutError):
    """The call did not finish within its deadline."""


class MeasureCrash(RuntimeError):
    """The child process running the call died."""


def _call_in_thread(fn, args, timeout_s):
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - reported to the caller as the candidate's failure
            box["error"] = err

    t = threading.Thread(target=target, daemon=True, name="keras-eff-measure")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise MeasureTimeout(f"no result within {timeout_s:g} s (the call was abandoned)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _worker_loop(conn):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    conn.send("ready")  # imports done: the caller's deadline starts with the call, not with the start-up
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, fn(*args)))
        except BaseException as err:  # noqa: BLE001
            conn.send((False, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))


class ProcessWorker:
    """One child process that runs calls one at a time; killed and restarted after a crash or a timeout."""

    def __init__(self, startup_timeout_s: float = 300.0):
        self._proc = self._conn = None
        self.starts = 0
        self.startup_timeout_s = startup_timeout_s

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_loop, args=(child,), daemon=True, name="keras-eff-measure")
        self._proc.start()
        child.close()
        self._conn = parent
        self.starts += 1
        if not self._receive(self.startup_timeout_s, "start") == "ready":
            self.close()
            raise MeasureCrash("the measuring process did not start properly")

    def _receive(self, timeout_s, what):
        try:
            ready = self._conn.poll(timeout_s)
            value = self._conn.recv() if ready else None
        except (EOFError, ConnectionError, BrokenPipeError):
            code = self._proc.exitcode if self._proc is not None else None
            self.close()
            raise MeasureCrash(f"the measuring process died (exit code {code})") from None
        if not ready:
            self.close()
            raise MeasureTimeout(f"no {what} within {timeout_s:g} s (the child process was killed)")
        return value

    def call(self, fn, args, timeout_s):
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((fn, args))
        ok, value = self._receive(timeout_s, "result")
        if not ok:
            raise RuntimeError(value)
        return value

    def close(self):
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None


class Guard:
    """Calls a function with a deadline, so that a measurer that crashes or hangs fails one call, not the caller.

    ``guard.call(fn, *args)`` returns ``fn(*args)`` or raises: the function's own exception, `MeasureTimeout` after
    ``timeout_s`` seconds, or `MeasureCrash` when the child process died. Call :meth:`close` when done.

    Args:
        timeout_s: The deadline of each call, in seconds; positive.
        isolation: ``"thread"``: the call runs in a daemon thread, which a timeout abandons (a hard crash of
            native code still takes this process down). ``"process"``: it runs in a persistent child process
            (spawned at the first call, reused), which a crash or a timeout kills and the next call restarts; ``fn``
            must then be a module-level function and ``args`` picklable, and a script must start its work under
            ``if __name__ == "__main__":`` (the child imports the main module).

    Raises:
        ValueError: If ``isolation`` is unknown or ``timeout_s`` is not positive.

    Example:
        ```python
        guard = Guard(timeout_s=60, isolation="process")
        try:
            data = guard.call(int8_model, tiny_space(), tiny_space().reference())
        finally:
            guard.close()
        ```
    """

    def __init__(self, timeout_s: float = 120.0, isolation: str = "thread"):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation: {isolation!r} is unknown; choose from {', '.join(ISOLATIONS)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: {timeout_s} must be positive")
        self.timeout_s, self.isolation = float(timeout_s), isolation
        self._worker = ProcessWorker() if isolation == "process" else None

    def call(self, fn, *args):
        """``fn(*args)`` within the deadline, isolated as the guard says.

        Args:
            fn: The function (module-level for ``"process"`` isolation).
            *args: Its arguments (picklable for ``"process"`` isolation).

        Returns:
            What ``fn`` returns.

        Raises:
            MeasureTimeout: If there is no result within ``timeout_s`` seconds (a ``TimeoutError``).
            MeasureCrash: If the child process died (a ``RuntimeError``).
            Exception: What ``fn`` raised (in ``"process"`` isolation, a ``RuntimeError`` with its type, message
                and traceback).
        """
        if self._worker is not None:
            return self._worker.call(fn, args, self.timeout_s)
        return _call_in_thread(fn, args, self.timeout_s)

    def close(self):
        """Kills the child process, if any.

        Returns:
            None.
        """
        if self._worker is not None:
            self._worker.close()
