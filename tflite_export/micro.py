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
from .micro_check import MicroCheck, check_micro
from .micro_ops import unsupported_micro_ops
from .model_file import read_model


@dataclass
class MicroPackage:
    name: str
    tflite: bytes
    sources: CSources
    arena: ArenaEstimate
    check: MicroCheck | None

    @property
    def ops(self) -> list:
        return self.sources.ops

    def file_names(self) -> list:
        return sorted([*self.sources.files, f"{self.name}.tflite", f"{self.name}_micro.json"])

    def as_dict(self) -> dict:
        return {"name": self.name, "tflite_bytes": len(self.tflite), "ops": self.ops,
                "op_resolver_calls": [line.strip() for line in self.sources.op_resolver.splitlines()
                                      if "resolver.Add" in line],
                "arena": self.arena.as_dict(), "micro_check": self.check.as_dict() if self.check else None,
                "files": self.file_names()}

    def files(self) -> dict:
        """File name -> contents (str or bytes) of everything the package holds."""
        out = dict(self.sources.files)
        out[f"{self.name}.tflite"] = self.tflite
        out[f"{self.name}_micro.json"] = json.dumps(self.as_dict(), indent=2) + "\n"
        return out

    def write(self, out_dir, overwrite: bool = False) -> list:
        """Writes all files into ``out_dir`` at once (none when one fails); existing files need ``overwrite``."""
        return write_files(out_dir, self.files(), overwrite=overwrite)

    def __str__(self):
        lines = [f"{self.name}: {len(self.tflite):,} bytes of flash for the model, ops {', '.join(self.ops)}",
                 f"  {self.arena}"]
        if self.check is not None:
            lines.append(f"  {self.check}")
        return "\n".join(lines)


def micro_package(model, name: str = "model", x=None, margin: float = DEFAULT_MARGIN, check_samples: int = 200,
                  source_note: str = "") -> MicroPackage:
    """Builds the microcontroller package of a TFLite model (bytes or path).

    Fails with ``MicroRuntimeError`` before anything else when the model uses ops TFLite Micro lacks. ``x`` (float
    samples, or samples on the input grid) runs the TFLite Micro vs LiteRT check on its first ``check_samples``.
    """
    check_c_name(name)
    data = read_model(model)
    missing = unsupported_micro_ops(data)
    if missing:
        raise MicroRuntimeError(f"TFLite Micro cannot run op(s) {', '.join(missing)} used by this model: replace the "
                                f"layers that produce them before deploying to a microcontroller")
    arena = find_arena_size(data, margin=margin)
    sources = to_c_source(data, name, arena_bytes=arena.recommended_bytes, source_note=source_note)
    check = None
    if x is not None:
        xs = [a[:check_samples] for a in x] if isinstance(x, (list, tuple)) else x[:check_samples]
        check = check_micro(data, xs, arena_size=arena.recommended_bytes)
    return MicroPackage(name, data, sources, arena, check)
