"""TensorFlow's start-up log lines, filtered for the command line by TF_CPP_MIN_LOG_LEVEL.

TensorFlow 2.21 prints its first log lines ("oneDNN custom operations are on", "Could not find cuda drivers") through
absl before its logging is set up, so TF_CPP_MIN_LOG_LEVEL does not hide them. While the command line runs,
:func:`quiet_tensorflow_import` catches what the process writes to stderr (file descriptor 2) during
``import tensorflow`` and passes on only the records at or above TF_CPP_MIN_LOG_LEVEL (0 all, 1 warnings and errors,
2 errors, 3 none), and anything that is not a log record.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from ._import_hooks import LoaderWrappingFinder, WrappingLoader

_RECORD = re.compile(r"^([IWEF])\d{4} ")  # absl: I0000 00:00:1796545674.014520   11886 port.cc:153] ...
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_log_text(text: str, level: int) -> str:
    """``text`` without the absl records below ``level`` (a record's continuation lines go with it), and without
    absl's preamble line when level >= 1."""
    out, keep = [], True
    for line in text.splitlines(keepends=True):
        m = _RECORD.match(line)
        if m:
            keep = _LEVELS[m.group(1)] >= level
        elif line.rstrip("\n") == _ABSL_PREAMBLE:
            keep = level < 1
        elif not keep and line.startswith(("To enable the following instructions", " ")):
            pass  # the continuation of a dropped record
        else:
            keep = True
        if keep:
            out.append(line)
    return "".join(out)


@contextlib.contextmanager
def _filtered_stderr(level: int):
    """Within the block, file descriptor 2 goes to a temporary file; on the way out, its filtered text is written to
    the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = filter_log_text(tmp.read().decode("utf-8", errors="replace"), level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


class _QuietLoader(WrappingLoader):
    def run(self, module):
        with _filtered_stderr(min_log_level()):
            self._loader.exec_module(module)


class _QuietTensorFlowImport(LoaderWrappingFinder):
    """Wraps the loader of ``tensorflow``, whoever imports it, in :func:`_filtered_stderr`."""

    loader_class = _QuietLoader

    def wants(self, name):
        return name == "tensorflow"


@contextlib.contextmanager
def quiet_tensorflow_import():
    """Within the block, TensorFlow's start-up log lines below TF_CPP_MIN_LOG_LEVEL are dropped, whichever module
    imports TensorFlow (nothing happens if it is already imported or the level is 0)."""
    if "tensorflow" in sys.modules or min_log_level() < 1:
        yield
        return
    hook = _QuietTensorFlowImport()
    hook.install()
    try:
        yield
    finally:
        hook.remove()
