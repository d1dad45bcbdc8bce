"""The microcontroller package of a TFLite model: C sources, op resolver, tensor arena estimate and TFLite Micro check.

pkg = micro_package(tflite_bytes, name="model", x=test_images[:200])
print(pkg)                  # a short summary
pkg.write("out/mcu")        # model.h, model.c, model_op_resolver.h, model.tflite, model_micro.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .arena import DEFAULT_MARGIN, ArenaEstimate, find_arena_size
from .c_source import CSources, check_c_name, to_c_source
from .errors import MicroRuntimeError
from .files import write_files
from .micro_check import MicroCheck, check_micro, head_of_inputs
from .micro_ops import unsupported_micro_ops
from .model_file import read_model


@dataclass
class MicroPackage:
    """The microcontroller package of a TFLite model, as built by ``micro_package``; held in memory until ``write``.

    ``str()`` gives a short summary (flash size, ops, arena, check).

    Attributes:
        name: The C identifier the files and symbols are named after.
        tflite: The model's bytes.
        sources: The C sources (`CSources`): ``NAME.h``, ``NAME.c``, ``NAME_op_resolver.h``.
        arena: The tensor arena estimate (`ArenaEstimate`).
        check: The TFLite Micro vs LiteRT check (`MicroCheck`), or None when no samples were given.
    """

    name: str
    tflite: bytes
    sources: CSources
    arena: ArenaEstimate
    check: MicroCheck | None

    @property
    def ops(self) -> list:
        """The distinct ops of the model, in graph order."""
        return self.sources.ops

    def file_names(self) -> list:
        """The names of the files ``write`` writes.

        Returns:
            The sorted file names: the C sources, ``NAME.tflite`` and ``NAME_micro.json``.
        """
        return sorted([*self.sources.files, f"{self.name}.tflite", f"{self.name}_micro.json"])

    def as_dict(self) -> dict:
        """A JSON-ready summary of the package (the content of ``NAME_micro.json``).

        Returns:
            A dict with the name, file size, ops, op resolver calls, arena estimate, check and file names.
        """
        return {
            "name": self.name,
            "tflite_bytes": len(self.tflite),
            "ops": self.ops,
            "op_resolver_calls": [
                line.strip() for line in self.sources.op_resolver.splitlines() if "resolver.Add" in line
            ],
            "arena": self.arena.as_dict(),
            "micro_check": self.check.as_dict() if self.check else None,
            "files": self.file_names(),
        }

    def files(self) -> dict:
        """Everything the package holds, in memory.

        Returns:
            File name -> contents (str or bytes): the C sources, ``NAME.tflite`` and ``NAME_micro.json``.
        """
        out = dict(self.sources.files)
        out[f"{self.name}.tflite"] = self.tflite
        out[f"{self.name}_micro.json"] = json.dumps(self.as_dict(), indent=2) + "\n"
        return out

    def write(self, out_dir, overwrite: bool = False) -> list:
        """Writes all the package's files into ``out_dir``, all or none (see ``write_files``).

        Args:
            out_dir: The folder to write into; created when missing.
            overwrite: Replace files that exist; without it an existing file is an error raised before anything is
                written.

        Returns:
            The paths written, as ``pathlib.Path`` objects.

        Raises:
            FileExistsError: If a file exists and not ``overwrite``.
            OSError: If a file cannot be written; nothing is left behind then.

        Example:
            ```python
            tflite_export.micro_package(tflite_bytes, name="kws_model").write("mcu", overwrite=True)
            ```
        """
        return write_files(out_dir, self.files(), overwrite=overwrite)

    def __str__(self):
        lines = [
            f"{self.name}: {len(self.tflite):,} bytes of flash for the model, ops {', '.join(self.ops)}",
            f"  {self.arena}",
        ]
        if self.check is not None:
            lines.append(f"  {self.check}")
        return "\n".join(lines)


def micro_package(
    model, name: str = "model", x=None, margin: float = DEFAULT_MARGIN, check_samples: int = 200, source_note: str = ""
) -> MicroPackage:
    """Builds the microcontroller package of a TFLite model: C sources, op resolver, arena estimate and check.

    The ops are checked first: a model using ops TFLite Micro lacks fails before any other work. The arena is found
    with ``find_arena_size`` and the C sources are made with ``to_c_source`` (with the recommended arena size);
    with ``x``, ``check_micro`` runs TFLite Micro against LiteRT. Nothing is written until ``MicroPackage.write``.

    Args:
        model: A TFLite model, as bytes or a path (full int8 for a microcontroller).
        name: The C identifier the files and symbols are named after.
        x: Samples for the TFLite Micro vs LiteRT check: float samples (quantized onto the input grid) or samples
            already on the input grid, one array, or a list of arrays for several inputs; None skips the check.
        margin: The fraction added to the host arena minimum (0.25 is 25 %).
        check_samples: The most samples of ``x`` the check uses.
        source_note: Where the model came from, for the C files' header comment.

    Returns:
        A `MicroPackage`.

    Raises:
        ValueError: If ``name`` is not a C identifier, or ``x`` does not match the model's inputs.
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.
        MicroRuntimeError: If TFLite Micro lacks an op the model uses (the ops are named), or cannot run the
            model.

    Example:
        ```python
        pkg = tflite_export.micro_package(tflite_bytes, name="model", x=test_images[:200])
        print(pkg)
        pkg.write("out/mcu")  # model.h, model.c, model_op_resolver.h, model.tflite, model_micro.json
        ```
    """
    check_c_name(name)
    data = read_model(model)
    missing = unsupported_micro_ops(data)
    if missing:
        raise MicroRuntimeError(
            f"TFLite Micro cannot run op(s) {', '.join(missing)} used by this model: replace the "
            f"layers that produce them before deploying to a microcontroller"
        )
    arena = find_arena_size(data, margin=margin)
    sources = to_c_source(data, name, arena_bytes=arena.recommended_bytes, source_note=source_note)
    check = None
    if x is not None:
        xs = head_of_inputs(x, check_samples)
        check = check_micro(data, xs, arena_size=arena.recommended_bytes)
    return MicroPackage(name, data, sources, arena, check)
