"""The smallest TFLite Micro tensor arena a model runs in, found by binary search in a child process."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import MicroRuntimeError
from .micro_process import MicroProcess
from .model_file import read_model

# Messages TFLite Micro prints when the arena is too small; any other failure is the model's fault.
_TOO_SMALL = ("Failed to resize buffer", "Failed to allocate", "missing:", "Arena size is too small",
              "Too many buffers")  # the memory planner takes its scratch from the arena, too
ARENA_ALIGNMENT = 16
DEFAULT_MARGIN = 0.25
MARGIN_NOTE = (
    "host estimate: the smallest arena the tflite-micro Python interpreter (reference kernels, 64-bit host, "
    "recording allocator) needs to allocate and invoke the model. A 32-bit device stores smaller structs (less "
    "arena), while optimized kernels such as CMSIS-NN request scratch buffers the reference kernels do not (more "
    "arena). The recommended size adds the stated margin, rounded up to 16 bytes; confirm it on the device with "
    "RecordingMicroInterpreter before trimming it.")


@dataclass
class ArenaEstimate:
    """``host_min_bytes`` works and one byte less fails; ``recommended_bytes`` adds ``margin`` for a device build."""

    host_min_bytes: int
    recommended_bytes: int
    margin: float
    probes: int
    note: str = MARGIN_NOTE

    def as_dict(self):
        return asdict(self)

    def __str__(self):
        return (f"tensor arena: {self.recommended_bytes:,} bytes recommended (host minimum {self.host_min_bytes:,} "
                f"bytes + {self.margin:.0%} margin)")


def _too_small(reply) -> bool:
    if reply.timed_out:
        return False
    return reply.crashed or any(m in reply.log for m in _TOO_SMALL)


def try_arena(model, arena_size: int) -> bool:
    """Whether TFLite Micro allocates and invokes ``model`` with an ``arena_size``-byte arena (in a fresh process)."""
    with MicroProcess(read_model(model)) as proc:
        return proc.request(op="try", arena=int(arena_size)).ok


def recommended_arena(host_min_bytes: int, margin: float = DEFAULT_MARGIN) -> int:
    return int(math.ceil(host_min_bytes * (1 + margin) / ARENA_ALIGNMENT) * ARENA_ALIGNMENT)


def find_arena_size(model, margin: float = DEFAULT_MARGIN, start: int = 64 * 1024,
                    max_bytes: int = 512 * 1024 * 1024) -> ArenaEstimate:
    """Binary search for the smallest arena, in bytes, with which TFLite Micro allocates and invokes ``model``.

    Every probe runs in a child process (restarted after a crash: a far too small arena can segfault). Raises
    ``MicroRuntimeError`` with TFLite Micro's own message when the model fails for a reason other than arena size
    (an op TFLite Micro lacks, a tensor type its kernel refuses), or still fails at ``max_bytes``.
    """
    if not 0 <= margin <= 10:
        raise ValueError(f"margin must be a fraction between 0 and 10 (0.25 = 25%), got {margin}")
    data = read_model(model)
    probes = 0
    with MicroProcess(data) as proc:
        def works(size):
            nonlocal probes
            probes += 1
            reply = proc.request(op="try", arena=int(size))
            if reply.ok:
                return True
            if not _too_small(reply):
                raise MicroRuntimeError(f"TFLite Micro cannot run this model: {reply.error}")
            return False

        hi = max(int(start), 1024)
        while not works(hi):
            if hi >= max_bytes:
                raise MicroRuntimeError(f"TFLite Micro could not allocate the model even with a {max_bytes:,}-byte "
                                        f"arena")
            hi = min(hi * 4, max_bytes)
        lo = 0  # an empty arena never works
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if works(mid):
                hi = mid
            else:
                lo = mid
    return ArenaEstimate(hi, recommended_arena(hi, margin), margin, probes)
