"""Arm Ethos-U microNPUs: a full-int8 TFLite file compiled by Arm's Vela, and what Vela says of it.

    result = compile_ethos_u(int8_bytes, "ethos-u55-128")
    print(result.report)              # ops on the NPU or the CPU (with Vela's reason), cycles, time, SRAM, flash
    result.report.to_markdown()       # per-layer cycles and MACs as Vela's per-layer CSV gives them
    result.tflite                     # the Vela-optimized file: an `ethos-u` custom op (+ the ops left to the CPU)

Every number comes from Vela (``ethos-u-vela``) itself, run as a child process on a copy of the file: its summary CSV
(cycles, inference time, memory, encoded weights), its per-layer CSV (per-op target, cycles, MACs) and its report of
the operators it leaves to the CPU with its reasons. Nothing is estimated here. The Vela-optimized file holds an
``ethos-u`` custom op that only the NPU driver runs: LiteRT and the host TFLite Micro cannot execute it.
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from .c_source import to_c_source
from .errors import TFLiteExportError
from .model_file import read_graph_flatbuffer, read_model

ETHOS_U_OP = "ethos-u"
_VELA_PACKAGE = "ethos-u-vela"
_KIB = 1024


class EthosUError(TFLiteExportError):
    """Vela refused or failed to compile a file, or was asked for something it does not have."""


def vela_version() -> str:
    """The version of Arm's Vela compiler (the ``ethos-u-vela`` package) installed.

    Returns:
        The version string, e.g. ``"5.2.0"``.

    Raises:
        EthosUError: If Vela is not installed, saying how to install it.
    """
    try:
        return metadata.version(_VELA_PACKAGE)
    except metadata.PackageNotFoundError:
        raise EthosUError(f"Arm's Vela compiler is not installed: pip install {_VELA_PACKAGE}") from None


def accelerators() -> list:
    """The accelerator configurations the installed Vela knows, the valid ``target`` names of ``compile_ethos_u``.

    Returns:
        A list of names such as ``"ethos-u55-32"`` … ``"ethos-u85-2048"``.

    Raises:
        EthosUError: If Vela is not installed.
    """
    vela_version()
    from ethosu.vela.architecture_features import Accelerator  # noqa: PLC0415 - Vela may be absent: checked first

    return list(Accelerator.member_list())


def default_vela_config() -> Path:
    """The configuration file that ships with Vela (``Arm/vela.ini``): Arm's reference system configurations and
    memory modes.

    Returns:
        The path of that file in the installed Vela package.

    Raises:
        EthosUError: If Vela is not installed.
    """
    vela_version()
    import ethosu.vela  # noqa: PLC0415 - Vela may be absent: vela_version() says how to install it

    return Path(ethosu.vela.__file__).parent.parent / "config_files" / "Arm" / "vela.ini"


def vela_configurations(config_file=None) -> dict:
    """The system configurations and memory modes a Vela ``.ini`` file defines.

    Args:
        config_file: The path of a Vela configuration file; None reads the ``Arm/vela.ini`` that ships with Vela.

    Returns:
        ``{"system_configs": [...], "memory_modes": [...]}``: the section names, without their
        ``System_Config.`` / ``Memory_Mode.`` prefixes.

    Raises:
        EthosUError: If the file does not exist or cannot be parsed, or (with the default) Vela is not installed.

    Example:
        ```python
        tflite_export.vela_configurations()["system_configs"]  # e.g. ["Ethos_U55_High_End_Embedded", ...]
        ```
    """
    path = Path(config_file) if config_file is not None else default_vela_config()
    if not path.is_file():
        raise EthosUError(f"Vela configuration file {str(path)!r} does not exist")
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as err:
        raise EthosUError(f"Vela configuration file {str(path)!r} cannot be read: {err}") from err
    systems = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("System_Config.")]
    modes = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("Memory_Mode.")]
    return {"system_configs": systems, "memory_modes": modes}


@dataclass
class EthosUOp:
    """One op of the input file and where Vela put it.

    Attributes:
        index: The op's position in the input file's graph.
        op: The op's name (``CONV_2D``, ...).
        output: The name of its first output tensor.
        target: ``"NPU"`` or ``"CPU"``.
        reason: Vela's reason for leaving the op to the CPU; None for an NPU op.
    """

    index: int
    op: str
    output: str
    target: str  # "NPU" or "CPU"
    reason: str | None = None  # Vela's reason, for an op left to the CPU

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return {"index": self.index, "op": self.op, "output": self.output, "target": self.target, "reason": self.reason}


@dataclass
class EthosULayer:
    """One row of Vela's per-layer CSV: an op as Vela scheduled it (an op may become several NPU operations).

    Attributes:
        original_op: The op of the input file (Vela's "Original Operator").
        npu_op: The operation Vela scheduled (its "NNG Operator").
        target: Where it runs, as Vela writes it (``"NPU"`` or ``"CPU"``).
        cycles: Vela's cycle estimate for the operation.
        macs: Its multiply-accumulates.
        name: The name Vela gives it (its output tensor).
    """

    original_op: str
    npu_op: str
    target: str
    cycles: int
    macs: int
    name: str

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return {
            "original_op": self.original_op,
            "npu_op": self.npu_op,
            "target": self.target,
            "cycles": self.cycles,
            "macs": self.macs,
            "name": self.name,
        }


@dataclass
class EthosUReport:
    """What Vela says of one compiled file, every figure taken from Vela's own output.

    Memory is in bytes (Vela reports KiB, converted here), times in seconds. ``str()`` gives a summary with the ops
    left to the CPU and Vela's reasons.

    Attributes:
        accelerator: The accelerator configuration compiled for (``ethos-u55-128``, ...).
        system_config: The system configuration Vela used (its default for the accelerator when none was named).
        memory_mode: The memory mode Vela used.
        vela_version: The version of Vela that compiled the file.
        clock_hz: The NPU clock of the system configuration.
        cycles: Vela's total cycle estimate for one inference.
        inference_time_s: ``cycles`` at ``clock_hz``, as Vela reports it.
        sram_bytes: SRAM used (the tensor arena for the NPU part).
        dram_bytes: DRAM used.
        on_chip_flash_bytes: On-chip flash used (command stream and weights).
        off_chip_flash_bytes: Off-chip flash used.
        original_weight_bytes: Weight bytes before Vela's encoding.
        encoded_weight_bytes: Weight bytes after Vela's encoding (compression).
        macs: Multiply-accumulates of one inference.
        input_bytes: The size of the int8 file given to Vela.
        vela_file_bytes: The size of the Vela-optimized file.
        ops: An `EthosUOp` per op of the input file: NPU or CPU, and why.
        layers: An `EthosULayer` per row of Vela's per-layer CSV.
        warnings: Things to fix in the input file (e.g. a dynamic batch axis Vela had to set to 1).
        summary: Vela's summary CSV row, as Vela wrote it.
    """

    accelerator: str
    system_config: str
    memory_mode: str
    vela_version: str
    clock_hz: float
    cycles: int
    inference_time_s: float
    sram_bytes: int
    dram_bytes: int
    on_chip_flash_bytes: int
    off_chip_flash_bytes: int
    original_weight_bytes: int
    encoded_weight_bytes: int
    macs: int
    input_bytes: int
    vela_file_bytes: int
    ops: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # Vela's summary CSV row, as Vela wrote it

    @property
    def npu_ops(self) -> list:
        """The `EthosUOp`s Vela placed on the NPU."""
        return [o for o in self.ops if o.target == "NPU"]

    @property
    def cpu_ops(self) -> list:
        """The `EthosUOp`s Vela left to the CPU, each with Vela's reason."""
        return [o for o in self.ops if o.target == "CPU"]

    @property
    def flash_bytes(self) -> int:
        """Flash holding the command stream and the compressed weights (on-chip and off-chip)."""
        return self.on_chip_flash_bytes + self.off_chip_flash_bytes

    @property
    def inference_time_us(self) -> float:
        """``inference_time_s`` in microseconds."""
        return self.inference_time_s * 1e6

    def as_dict(self) -> dict:
        """The report as a JSON-ready dict.

        Returns:
            The scalar fields, ``flash_bytes``, ``inference_time_us``, the NPU and CPU op counts, ``ops`` and
            ``layers`` as lists of dicts, ``warnings``, and Vela's summary row as ``vela_summary``.
        """
        scalars = {
            k: getattr(self, k)
            for k in (
                "accelerator",
                "system_config",
                "memory_mode",
                "vela_version",
                "clock_hz",
                "cycles",
                "inference_time_s",
                "sram_bytes",
                "dram_bytes",
                "on_chip_flash_bytes",
                "off_chip_flash_bytes",
                "original_weight_bytes",
                "encoded_weight_bytes",
                "macs",
                "input_bytes",
                "vela_file_bytes",
            )
        }
        return {
            **scalars,
            "flash_bytes": self.flash_bytes,
            "inference_time_us": self.inference_time_us,
            "npu_op_count": len(self.npu_ops),
            "cpu_op_count": len(self.cpu_ops),
            "ops": [o.as_dict() for o in self.ops],
            "layers": [r.as_dict() for r in self.layers],
            "warnings": list(self.warnings),
            "vela_summary": dict(self.summary),
        }

    def to_json(self) -> str:
        """The report as indented JSON text.

        Returns:
            ``as_dict()`` as JSON, ending with a newline.
        """
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def to_markdown(self, title: str = "Ethos-U report") -> str:
        """The report as markdown: the totals, the op placement (with Vela's reasons) and the per-layer table.

        Args:
            title: The level-1 heading.

        Returns:
            The markdown text.
        """
        md = [
            f"# {title}",
            "",
            (
                f"Compiled by Vela {self.vela_version} for {self.accelerator} "
                f"({self.system_config}, {self.memory_mode}, {self.clock_hz / 1e6:g} MHz)."
            ),
            "",
        ]
        md += [f"> **Warning:** {w}" for w in self.warnings] + ([""] if self.warnings else [])
        md += [
            "| | |",
            "|---|---|",
            f"| ops on the NPU / CPU | {len(self.npu_ops)} / {len(self.cpu_ops)} |",
            f"| NPU cycles | {self.cycles:,} |",
            f"| inference time | {self.inference_time_us:,.1f} µs |",
            f"| SRAM used | {self.sram_bytes:,} B |",
            f"| flash used (on-chip + off-chip) | {self.flash_bytes:,} B |",
            f"| DRAM used | {self.dram_bytes:,} B |",
            (
                f"| weights: original → after Vela's encoding | {self.original_weight_bytes:,} → "
                f"{self.encoded_weight_bytes:,} B |"
            ),
            f"| MACs | {self.macs:,} |",
            f"| file: int8 → Vela | {self.input_bytes:,} → {self.vela_file_bytes:,} B |",
            "",
        ]
        md += ["## Op placement", "", "| # | op | output | target | reason (CPU ops) |", "|---|---|---|---|---|"]
        md += [f"| {o.index} | {o.op} | `{o.output}` | {o.target} | {o.reason or ''} |" for o in self.ops]
        md += [
            "",
            "## Per layer (Vela's per-layer CSV)",
            "",
            "| op | NPU operation | target | cycles | MACs | name |",
            "|---|---|---|---|---|---|",
        ]
        md += [
            f"| {r.original_op} | {r.npu_op} | {r.target} | {r.cycles:,} | {r.macs:,} | `{r.name}` |"
            for r in self.layers
        ]
        return "\n".join(md) + "\n"

    def __str__(self):
        lines = [
            (
                f"{self.accelerator} ({self.system_config}, {self.memory_mode}), Vela {self.vela_version}: "
                f"{len(self.npu_ops)} ops on the NPU, {len(self.cpu_ops)} on the CPU; {self.cycles:,} cycles, "
                f"{self.inference_time_us:,.1f} µs; SRAM {self.sram_bytes:,} B, flash {self.flash_bytes:,} B; "
                f"weights {self.original_weight_bytes:,} → {self.encoded_weight_bytes:,} B"
            )
        ]
        lines += [f"  CPU: #{o.index} {o.op} '{o.output}': {o.reason}" for o in self.cpu_ops]
        return "\n".join(lines)


@dataclass
class EthosUCompilation:
    """The result of ``compile_ethos_u``: the Vela-optimized file and Vela's report of it.

    The file holds an ``ethos-u`` custom op that only the NPU driver runs: LiteRT and the host TFLite Micro cannot
    execute it.

    Attributes:
        tflite: The Vela-optimized TFLite file, as bytes.
        report: Vela's report of the compilation, an `EthosUReport`.
    """

    tflite: bytes
    report: EthosUReport

    def files(self, name: str = "model") -> dict:
        """The deployment files, in memory; write them with ``tflite_export.write_files``.

        Args:
            name: The C identifier the files and symbols are named after.

        Returns:
            File name -> contents (str or bytes): ``NAME_vela.tflite``, its C array (``NAME.c``, ``NAME.h``, with
            Vela's SRAM figure as the arena size to start from), ``NAME_op_resolver.h`` (the ``ethos-u`` custom op
            plus any op left to the CPU) and the report as ``NAME_ethos_u.md`` and ``NAME_ethos_u.json``.

        Raises:
            ValueError: If ``name`` is not a C identifier.
        """
        sources = to_c_source(
            self.tflite,
            name,
            arena_bytes=self.report.sram_bytes,
            arena_note=f"Vela's SRAM use on {self.report.accelerator} ({self.report.memory_mode}); "
            f"add what the CPU ops need",
        )
        out = dict(sources.files)
        out[f"{name}_vela.tflite"] = self.tflite
        out[f"{name}_ethos_u.md"] = self.report.to_markdown(f"Ethos-U report: {name}")
        out[f"{name}_ethos_u.json"] = self.report.to_json()
        return out


def check_vela_input(model) -> bytes:
    """Checks that Vela can be given ``model``: full int8 (no float or int16 activations), not already compiled.

    Args:
        model: A TFLite model, as bytes or a path.

    Returns:
        The model's bytes.

    Raises:
        EthosUError: If the file has float or int16 activation tensors, or already holds an ``ethos-u`` op.
        InvalidTFLiteModel: If ``model`` is not a readable TFLite file.
    """
    return _vela_input(model)[0]


def _vela_input(model):
    """``(bytes, graph)`` of a file Vela can compile (see :func:`check_vela_input`)."""
    data = read_model(model)
    graph = read_graph_flatbuffer(data)
    if ETHOS_U_OP in graph.op_names():
        raise EthosUError(
            "this file is already compiled by Vela (it holds an 'ethos-u' op): give Vela the int8 file it was made from"
        )
    for op in graph.ops:
        for i in op.inputs + op.outputs:
            t = graph.tensors[i]
            if t.is_constant:
                continue
            kind = t.dtype.name if t.dtype != object else "non-numeric"
            if t.dtype in (np.float32, np.float16, np.float64):
                raise EthosUError(
                    f"Vela needs a full-int8 file, but op #{op.index} {op.name} reads or writes {kind} tensor "
                    f"'{t.name}'. Export full int8 with int8 input and output: tflite_export.to_tflite(model, "
                    f"representative_data=...) for a float model, or quantize it first with keras_eff.quantize_model"
                )
            if t.dtype == np.int16:
                raise EthosUError(
                    f"Vela is given full-int8 files here, but op #{op.index} {op.name} has int16 tensor '{t.name}' "
                    f"(16-bit activations): quantize the activations to 8 bits and export with "
                    f"tflite_export.to_tflite"
                )
    return data, graph


def _check_choice(value, choices, what, hint):
    if value is not None and value not in choices:
        raise EthosUError(f"unknown {what} {value!r}; {hint}: {', '.join(choices) or '(none)'}")


def check_ethos_u_options(
    target: str, system_config: str | None = None, memory_mode: str | None = None, config_file=None
) -> Path:
    """Checks the names Vela will be given, before any slow work.

    Args:
        target: A Vela accelerator configuration (see ``accelerators()``).
        system_config: A system configuration section of the configuration file; None skips the check.
        memory_mode: A memory mode section of the configuration file; None skips the check.
        config_file: The path of a Vela ``.ini`` file; None uses the ``Arm/vela.ini`` that ships with Vela.

    Returns:
        The path of the configuration file the names were checked in.

    Raises:
        EthosUError: If Vela is not installed, the configuration file is missing or unreadable, or a name is
            unknown (the message lists the valid ones).

    Example:
        ```python
        tflite_export.check_ethos_u_options("ethos-u55-128", memory_mode="Shared_Sram")
        ```
    """
    _check_choice(target, accelerators(), "Ethos-U accelerator", "choose one of")
    config_path = Path(config_file) if config_file is not None else default_vela_config()
    configs = vela_configurations(config_path)
    _check_choice(system_config, configs["system_configs"], "Vela system configuration", f"{config_path.name} defines")
    _check_choice(memory_mode, configs["memory_modes"], "Vela memory mode", f"{config_path.name} defines")
    return config_path


def compile_ethos_u(
    model,
    target: str = "ethos-u55-128",
    *,
    system_config: str | None = None,
    memory_mode: str | None = None,
    config_file=None,
    optimise: str = "Performance",
    timeout_s: float = 600.0,
) -> EthosUCompilation:
    """Compiles a full-int8 TFLite file for an Arm Ethos-U accelerator with Vela.

    Vela runs as a child process on a copy of the file in a temporary folder; nothing is written anywhere else.
    Every figure of the report comes from Vela's own output (its summary CSV, per-layer CSV and list of the ops it
    leaves to the CPU).

    Args:
        model: A full-int8 TFLite model (int8 activations, input and output), as bytes or a path.
        target: A Vela accelerator configuration (see ``accelerators()``).
        system_config: A system configuration section of ``config_file``; None lets Vela pick its default for the
            accelerator.
        memory_mode: A memory mode section of ``config_file``; None lets Vela pick its default.
        config_file: The path of a Vela ``.ini`` file; None uses the ``Arm/vela.ini`` that ships with Vela.
        optimise: Vela's strategy, ``"Performance"`` or ``"Size"``.
        timeout_s: How long Vela may run, in seconds.

    Returns:
        An `EthosUCompilation`: the Vela-optimized bytes and an `EthosUReport`.

    Raises:
        EthosUError: If Vela is not installed; the file is float or int16 or already compiled; a name is unknown
            (the message lists the valid ones); or Vela fails or times out (with its message).
        InvalidTFLiteModel: If ``model`` is not a readable TFLite file.

    Example:
        ```python
        result = tflite_export.compile_ethos_u(int8_bytes, "ethos-u55-128")
        print(result.report)  # ops on the NPU or CPU, cycles, time, SRAM, flash
        tflite_export.write_files("npu", result.files("kws_model"))
        ```
    """
    version = vela_version()
    data, graph = _vela_input(model)
    config_path = check_ethos_u_options(target, system_config, memory_mode, config_file)
    _check_choice(optimise, ("Performance", "Size"), "Vela optimise strategy", "choose")
    with tempfile.TemporaryDirectory(prefix="keras_eff_vela_") as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(data)
        out_dir = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "ethosu.vela",
            str(src),
            "--output-dir",
            str(out_dir),
            "--accelerator-config",
            target,
            "--optimise",
            optimise,
            "--verbose-performance",
            "--show-cpu-operations",
        ]
        if config_file is not None:
            cmd += ["--config", str(config_path.resolve())]
        elif system_config or memory_mode:  # Vela refuses its own file by path when it picks the defaults
            cmd += ["--config", "Arm/vela.ini"]
        if system_config:
            cmd += ["--system-config", system_config]
        if memory_mode:
            cmd += ["--memory-mode", memory_mode]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "PYTHONWARNINGS": "ignore"}
            )
        except subprocess.TimeoutExpired:
            raise EthosUError(f"Vela did not finish compiling for {target} within {timeout_s:g} s") from None
        log = proc.stdout + proc.stderr
        vela_file = out_dir / "model_vela.tflite"
        summaries = sorted(out_dir.glob("model_summary_*.csv"))
        per_layer = out_dir / "model_per-layer.csv"
        if proc.returncode != 0 or not vela_file.is_file() or not summaries:
            tail = "\n".join(log.strip().splitlines()[-15:])
            raise EthosUError(
                f"Vela {version} failed to compile the file for {target} (exit code {proc.returncode}):\n{tail}"
            )
        vela_bytes = vela_file.read_bytes()
        summary = _read_csv(summaries[0])[0]
        layers = _read_layers(per_layer) if per_layer.is_file() else []
    report = _make_report(data, graph, vela_bytes, summary, layers, log, target, version)
    return EthosUCompilation(vela_bytes, report)


def _read_csv(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_layers(path) -> list:
    return [
        EthosULayer(
            r["Original Operator"],
            r["NNG Operator"],
            r["Target"],
            int(float(r["Op Cycles"])),
            int(float(r["MAC Count"])),
            r["Name"],
        )
        for r in _read_csv(path)
    ]


# "Warning (supported operators) operator: GATHER, ofm: 'name'" then "Reason: ..." and detail lines to a blank line
_UNSUPPORTED = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'\n((?:.+\n?)*)", re.MULTILINE)
_CPU_LINE = re.compile(r"^\s*CPU: \S+ = (.*) \(outputs \[.*\]\)$", re.MULTILINE)


def _cpu_reasons(log: str) -> dict:
    """Output tensor name -> Vela's reason for not placing the op that writes it on the NPU."""
    out: dict[str, str] = {}
    for m in _UNSUPPORTED.finditer(log):
        lines = [ln.strip() for ln in m.group(3).splitlines() if ln.strip()]
        if lines and lines[0].startswith("Reason: "):
            lines[0] = lines[0][len("Reason: ") :]
        out.setdefault(m.group(2), "; ".join(lines))
    return out


def _vela_warnings(log: str) -> list:
    warnings = []
    dynamic = len(re.findall(r"has a dynamic signature in axis 0", log))
    if dynamic:
        warnings.append(
            f"the file has a dynamic batch axis: Vela set it to 1 on {dynamic} tensors; export device "
            f"files with a static batch of 1 (tflite_export.to_tflite(..., batch_size=1))"
        )
    return warnings


def _kib(summary, key) -> int:
    return int(round(float(summary.get(key) or 0) * _KIB))


def _make_report(data, graph, vela_bytes, summary, layers, log, target, version) -> EthosUReport:
    cpu_names = {r.name for r in layers if r.target == "CPU"} | set(_CPU_LINE.findall(log))
    reasons = _cpu_reasons(log)
    ops = []
    for op in graph.ops:
        outputs = [graph.tensors[i].name for i in op.outputs]
        on_cpu = any(n in cpu_names for n in outputs)
        reason = next((reasons[n] for n in outputs if n in reasons), None) if on_cpu else None
        if on_cpu and reason is None:
            reason = "Vela left it to the CPU (no reason given)"
        ops.append(EthosUOp(op.index, op.name, outputs[0] if outputs else "", "CPU" if on_cpu else "NPU", reason))
    return EthosUReport(
        accelerator=target,
        system_config=summary.get("system_config", ""),
        memory_mode=summary.get("memory_mode", ""),
        vela_version=version,
        clock_hz=float(summary.get("core_clock") or 0),
        cycles=int(float(summary.get("cycles_total") or 0)),
        inference_time_s=float(summary.get("inference_time") or 0),
        sram_bytes=_kib(summary, "sram_memory_used"),
        dram_bytes=_kib(summary, "dram_memory_used"),
        on_chip_flash_bytes=_kib(summary, "on_chip_flash_memory_used"),
        off_chip_flash_bytes=_kib(summary, "off_chip_flash_memory_used"),
        original_weight_bytes=int(float(summary.get("total_original_weights") or 0)),
        encoded_weight_bytes=int(float(summary.get("total_npu_encoded_weights") or 0)),
        macs=int(float(summary.get("nn_macs") or 0)),
        input_bytes=len(data),
        vela_file_bytes=len(vela_bytes),
        ops=ops,
        layers=layers,
        warnings=_vela_warnings(log),
        summary=dict(summary),
    )
