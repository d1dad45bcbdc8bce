"""The smallest TFLite Micro tensor arena a model runs in, found by binary search in a child process."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import MicroRuntimeError
from .micro_process import MicroProcess
from .model_file import read_model

# Messages TFLite Micro prints when the arena is too small; any other failure is the model's fault.
_TOO_SMALL = (
    "Failed to resize buffer",
    "Failed to allocate",
    "missing:",
    "Arena size is too small",
    "Too many buffers",
)  # the memory planner takes its scratch from the arena, too
ARENA_ALIGNMENT = 16
DEFAULT_MARGIN = 0.25
MARGIN_NOTE = (
    "host estimate: the smallest arena the tflite-micro Python interpreter (reference kernels, 64-bit host, "
    "recording allocator) needs to allocate and invoke the model. A 32-bit device stores smaller structs (less "
    "arena), while optimized kernels such as CMSIS-NN request scratch buffers the reference kernels do not (more "
    "arena). The recommended size adds the stated margin, rounded up to 16 bytes; confirm it on the device with "
    "RecordingMicroInterpreter before trimming it."
)


@dataclass
class ArenaEstimate:
    """The tensor arena a model needs, as found by ``find_arena_size``.

    ``host_min_bytes`` works on the host and one byte less fails; ``recommended_bytes`` adds ``margin`` for a device
    build. ``str()`` gives a one-line summary.

    Attributes:
        host_min_bytes: The smallest arena, in bytes, with which the host's TFLite Micro interpreter allocates and
            invokes the model.
        recommended_bytes: ``host_min_bytes`` plus ``margin``, rounded up to a multiple of 16 bytes.
        margin: The fraction added for the device (0.25 is 25 %).
        probes: How many arena sizes the search tried.
        note: What the host estimate means for a device, and how to confirm it there.
    """

    host_min_bytes: int
    recommended_bytes: int
    margin: float
    probes: int
    note: str = MARGIN_NOTE

    def as_dict(self):
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return asdict(self)

    def __str__(self):
        return (
            f"tensor arena: {self.recommended_bytes:,} bytes recommended (host minimum {self.host_min_bytes:,} "
            f"bytes + {self.margin:.0%} margin)"
        )


def _too_small(reply) -> bool:
    if reply.timed_out:
        return False
    return reply.crashed or any(m in reply.log for m in _TOO_SMALL)


def try_arena(model, arena_size: int) -> bool:
    """Whether TFLite Micro allocates and invokes ``model`` with an arena of ``arena_size`` bytes.

    The interpreter runs in a fresh child process, so a crash (a far too small arena can segfault TFLite Micro) is
    an answer, not the end of the caller's process.

    Args:
        model: A TFLite model, as bytes or a path.
        arena_size: The arena to try, in bytes.

    Returns:
        True when allocation and one inference succeed; False on any failure (a too small arena, but also an op
        TFLite Micro lacks or a crash: ``find_arena_size`` tells these apart).

    Raises:
        InvalidTFLiteModel: If ``model`` is not a readable TFLite file.

    Example:
        ```python
        ok = tflite_export.try_arena("model.tflite", 32 * 1024)
        ```
    """
    with MicroProcess(read_model(model)) as proc:
        return proc.request(op="try", arena=int(arena_size)).ok


def recommended_arena(host_min_bytes: int, margin: float = DEFAULT_MARGIN) -> int:
    """The arena to build a device with: ``host_min_bytes`` plus ``margin``, rounded up to 16 bytes.

    Args:
        host_min_bytes: The smallest arena found on the host.
        margin: The fraction to add (0.25 is 25 %).

    Returns:
        The recommended size in bytes, a multiple of 16.
    """
    return int(math.ceil(host_min_bytes * (1 + margin) / ARENA_ALIGNMENT) * ARENA_ALIGNMENT)


def find_arena_size(
    model, margin: float = DEFAULT_MARGIN, start: int = 64 * 1024, max_bytes: int = 512 * 1024 * 1024
) -> ArenaEstimate:
    """Finds, to the byte, the smallest arena with which TFLite Micro allocates and invokes ``model``.

    The search grows the arena from ``start`` (times 4) until a probe works, then bisects. Every probe runs in a
    child process that is restarted after a crash (a far too small arena can segfault TFLite Micro). The result is a
    host estimate (the ``tflite-micro`` Python interpreter, reference kernels, 64-bit host): see
    ``ArenaEstimate.note`` and docs/export.md.

    Args:
        model: A TFLite model, as bytes or a path.
        margin: The fraction added to the host minimum for ``recommended_bytes``, between 0 and 10 (0.25 is 25 %).
        start: The first arena size tried, in bytes (at least 1024 is used).
        max_bytes: The largest arena tried before giving up, in bytes.

    Returns:
        An `ArenaEstimate` with the host minimum, the recommended size and the number of probes.

    Raises:
        ValueError: If ``margin`` is outside [0, 10].
        InvalidTFLiteModel: If ``model`` is not a readable TFLite file.
        MicroRuntimeError: With TFLite Micro's own message, when the model fails for a reason other than arena size
            (an op TFLite Micro lacks, a tensor type its kernel refuses), or still fails at ``max_bytes``.

    Example:
        ```python
        estimate = tflite_export.find_arena_size(tflite_bytes)
        print(estimate)  # tensor arena: ... bytes recommended (host minimum ... bytes + 25% margin)
        ```
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
                raise MicroRuntimeError(
                    f"TFLite Micro could not allocate the model even with a {max_bytes:,}-byte arena"
                )
            hi = min(hi * 4, max_bytes)
        lo = 0  # an empty arena never works
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if works(mid):
                hi = mid
            else:
                lo = mid
    return ArenaEstimate(hi, recommended_arena(hi, margin), margin, probes)
