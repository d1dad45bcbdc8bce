"""The TFLite Micro interpreter, kept in a child process: a too-small tensor arena can crash it outright."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_WORKER = Path(__file__).with_name("_micro_worker.py")


@dataclass
class Reply:
    """A worker's answer; ``crashed`` when the child died (its exit signal in ``returncode``)."""

    data: dict
    log: str
    crashed: bool = False
    returncode: int | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.crashed and bool(self.data.get("ok"))

    @property
    def error(self) -> str:
        if self.timed_out:
            return f"the TFLite Micro process hung: {self.log.strip()}"
        if self.crashed:
            how = f"signal {-self.returncode}" if self.returncode and self.returncode < 0 else f"exit {self.returncode}"
            return f"the TFLite Micro process crashed ({how})" + (f": {self.log.strip()}" if self.log.strip() else "")
        parts = [self.data.get("error", "")] + [self.log.strip()]
        return "; ".join(p for p in parts if p)


class MicroProcess:
    """A TFLite Micro interpreter over one model in a child process, restarted when it crashes."""

    def __init__(self, model_bytes: bytes, timeout: float = 600.0):
        self._dir = tempfile.TemporaryDirectory(prefix="keras_eff_micro_")
        self.model_path = Path(self._dir.name) / "model.tflite"
        self.model_path.write_bytes(model_bytes)
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.restarts = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        self._log = open(Path(self._dir.name) / f"stderr{self.restarts}.txt", "w+b")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER), str(self.model_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        return self._proc, self._log

    def request(self, **req) -> Reply:
        if self._proc is None or self._log is None or self._proc.poll() is not None:
            proc, log_file = self._start()
        else:
            proc, log_file = self._proc, self._log
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # started with pipes
        start = log_file.seek(0, os.SEEK_END)
        timed_out = False
        try:
            stdin.write((json.dumps(req) + "\n").encode())
            stdin.flush()
            ready, _, _ = select.select([stdout], [], [], self.timeout)
            timed_out = not ready
            line = b"" if timed_out else stdout.readline()
        except BrokenPipeError:
            line = b""
        if not line:
            if timed_out:
                proc.kill()
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            log = self._read_log(start)
            if timed_out:
                log = f"no answer within {self.timeout:.0f} s; {log}"
            self._close_proc()
            self.restarts += 1
            return Reply({}, log, crashed=True, returncode=rc, timed_out=timed_out)
        return Reply(json.loads(line), self._read_log(start))

    def _read_log(self, start: int) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(start)
        return self._log.read().decode(errors="replace")

    def _close_proc(self):
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            if self._proc.poll() is None:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self):
        self._close_proc()
        self._dir.cleanup()

    @property
    def workdir(self) -> Path:
        return Path(self._dir.name)
