"""A TFLite model as C source for a microcontroller build: an aligned byte array, its length, the I/O quantization
parameters, and the op resolver TFLite Micro needs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from .micro_ops import resolver_method
from .model_file import read_graph_flatbuffer, read_model

_C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_C_KEYWORDS = {
    "auto",
    "break",
    "case",
    "char",
    "const",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "typedef",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
    "class",
    "namespace",
    "new",
    "delete",
    "template",
    "this",
}


@dataclass
class CSources:
    """The C sources of a TFLite model, as made by ``to_c_source``.

    Attributes:
        name: The C identifier the files and symbols are named after.
        files: File name -> text: ``NAME.h``, ``NAME.c`` and ``NAME_op_resolver.h``.
        ops: The distinct ops of the model, in graph order (builtin names; ``ethos-u`` for a Vela-compiled file).
    """

    name: str
    files: dict
    ops: list  # distinct builtin ops in graph order

    @property
    def header(self) -> str:
        """The text of ``NAME.h``."""
        return self.files[f"{self.name}.h"]

    @property
    def source(self) -> str:
        """The text of ``NAME.c``."""
        return self.files[f"{self.name}.c"]

    @property
    def op_resolver(self) -> str:
        """The text of ``NAME_op_resolver.h``."""
        return self.files[f"{self.name}_op_resolver.h"]


def check_c_name(name: str) -> str:
    """Checks that ``name`` can name C (and C++) symbols and files.

    Args:
        name: The proposed identifier, e.g. ``"kws_model"``.

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: If ``name`` is empty, is not letters, digits and underscores starting with a letter or
            underscore, or is a C or C++ keyword.
    """
    if not _C_IDENT.match(name or "") or name in _C_KEYWORDS:
        raise ValueError(
            f"{name!r} is not usable as a C identifier: use letters, digits and underscores, not "
            f"starting with a digit (e.g. 'model' or 'kws_model')"
        )
    return name


def _c_float(v) -> str:
    v = float(np.float32(v))
    if not np.isfinite(v):
        raise ValueError(f"quantization scale {v} is not finite")
    return f"{v:.9g}f" if any(c in f"{v:.9g}" for c in ".e") else f"{v:.1f}f"


def _tensor_lines(name, kind, k, t) -> tuple[list, list]:
    """Declarations (header) and definitions (source) for one input or output tensor."""
    prefix = f"{name}_{kind}{k}" if k else f"{name}_{kind}"
    dims = ", ".join(str(d) for d in t.shape)
    scale = _c_float(t.scales[0]) if t.scales.size == 1 else "0.0f"
    zp = int(t.zero_points[0]) if t.zero_points.size == 1 else 0
    decl = [
        (
            f"/* {kind} {k}: '{t.name}', {t.dtype.name}, shape ({dims}); "
            "real = scale * (q - zero_point); scale 0: not quantized */"
        ),
        f"extern const float {prefix}_scale;",
        f"extern const int {prefix}_zero_point;",
        f"extern const int {prefix}_dims[{len(t.shape)}];",
        f"extern const int {prefix}_rank;",
    ]
    defs = [
        f"const float {prefix}_scale = {scale};",
        f"const int {prefix}_zero_point = {zp};",
        f"const int {prefix}_dims[{len(t.shape)}] = {{{dims}}};",
        f"const int {prefix}_rank = {len(t.shape)};",
    ]
    return decl, defs


def _byte_rows(data: bytes, per_row: int = 12) -> str:
    return "\n".join(
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + per_row]) + "," for i in range(0, len(data), per_row)
    )


def to_c_source(
    model,
    name: str = "model",
    alignment: int = 16,
    arena_bytes: int | None = None,
    source_note: str = "",
    arena_note: str = "host estimate with margin (see the report)",
) -> CSources:
    """Makes the C files a TFLite Micro build compiles a model from.

    ``NAME.h`` holds the declarations, sizes and the inputs' and outputs' quantization parameters; ``NAME.c`` the
    model's bytes in an array aligned to ``alignment`` (TFLite Micro requires at least 4, SIMD kernels prefer 16);
    ``NAME_op_resolver.h`` a C++ function registering exactly the model's ops with a ``MicroMutableOpResolver`` (a
    Vela-compiled file's ``ethos-u`` custom op is registered with ``AddEthosU``). Nothing is written to disk.

    Args:
        model: A TFLite model, as bytes or a path. Files LiteRT cannot load (Vela-compiled ones) are accepted.
        name: The C identifier for the files and symbols (``NAME_data``, ``NAME_data_len``, ...).
        alignment: The byte alignment of the data array, a power of two of at least 4.
        arena_bytes: When given, ``NAME.h`` defines ``NAME_TENSOR_ARENA_SIZE`` to it.
        source_note: Where the model came from, for the files' header comment.
        arena_note: What ``arena_bytes`` is, for the comment above the arena define.

    Returns:
        A `CSources` holding the three files' text and the model's ops.

    Raises:
        ValueError: If ``name`` is not a C identifier, ``alignment`` is not a power of two of at least 4, or an
            input or output quantization scale is not finite.
        InvalidTFLiteModel: If ``model`` is not a readable TFLite file.

    Example:
        ```python
        sources = tflite_export.to_c_source(tflite_bytes, name="kws_model", arena_bytes=24_000)
        tflite_export.write_files("mcu", sources.files)
        ```
    """
    check_c_name(name)
    if alignment < 4 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two of at least 4 bytes, got {alignment}")
    data = read_model(model)
    graph = read_graph_flatbuffer(data)
    ops = list(dict.fromkeys(graph.op_names()))
    guard = f"{name.upper()}_H_"
    upper = name.upper()
    digest = hashlib.sha256(data).hexdigest()
    note = f" from {source_note}" if source_note else ""
    head = [
        f"/* Generated by keras-eff{note}: a TFLite model for TFLite Micro.",
        f" * {len(data):,} bytes, sha256 {digest}.",
        f" * Ops ({len(ops)}): {', '.join(ops)}. Register them with {name}_op_resolver.h. */",
    ]
    decls, defs = [], []
    for kind, idxs in (("input", graph.inputs), ("output", graph.outputs)):
        for k, i in enumerate(idxs):
            d, s = _tensor_lines(name, kind, k, graph.tensors[i])
            decls += d + [""]
            defs += s
    arena = []
    if arena_bytes is not None:
        arena = [
            f"/* Tensor arena: {arena_note}; confirm on the device. */",
            f"#define {upper}_TENSOR_ARENA_SIZE {int(arena_bytes)}",
            "",
        ]
    header = "\n".join(
        head
        + [
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            f"#define {upper}_DATA_ALIGNMENT {alignment}",
            f"#define {upper}_NUM_OPS {len(ops)}",
            *arena,
            f"extern const unsigned char {name}_data[];",
            f"extern const unsigned int {name}_data_len;",
            "",
            *decls,
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            f"#endif /* {guard} */",
            "",
        ]
    )
    source = "\n".join(
        head
        + [
            f'#include "{name}.h"',
            "",
            "#if defined(__GNUC__) || defined(__clang__)",
            f"#define {upper}_ALIGNED __attribute__((aligned({alignment})))",
            "#elif defined(__cplusplus)",
            f"#define {upper}_ALIGNED alignas({alignment})",
            "#else",
            f"#define {upper}_ALIGNED _Alignas({alignment})",
            "#endif",
            "",
            f"const unsigned int {name}_data_len = {len(data)};",
            f"{upper}_ALIGNED const unsigned char {name}_data[{len(data)}] = {{",
            _byte_rows(data),
            "};",
            "",
            *defs,
            "",
        ]
    )
    adds = [f"  TF_LITE_ENSURE_STATUS(resolver.{resolver_method(op)}());" for op in ops]
    resolver = "\n".join(
        head[:1]
        + [
            " * The op resolver for this model: only the ops it uses. */",
            f"#ifndef {upper}_OP_RESOLVER_H_",
            f"#define {upper}_OP_RESOLVER_H_",
            "",
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
            f'#include "{name}.h"',
            "",
            f"using {_camel(name)}OpResolver = tflite::MicroMutableOpResolver<{upper}_NUM_OPS>;",
            "",
            f"inline TfLiteStatus Register{_camel(name)}Ops({_camel(name)}OpResolver& resolver) {{",
            *adds,
            "  return kTfLiteOk;",
            "}",
            "",
            f"#endif /* {upper}_OP_RESOLVER_H_ */",
            "",
        ]
    )
    return CSources(name, {f"{name}.h": header, f"{name}.c": source, f"{name}_op_resolver.h": resolver}, ops)


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p) or "Model"
