"""The `keras-eff` command line: demo, export, report, verify, donna.

Start-up: building the parser imports no TensorFlow (keras_eff and tflite_export load their names on first use), so
``--help`` answers at once; each command imports what it needs, after checking its output paths. Those imports stay
inside the functions (``# noqa: PLC0415 - start-up``): ``--help`` takes 0.3 s, ``import tensorflow`` 6-9 s
(benchmarks/results/startup.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import traceback
from pathlib import Path

import tflite_export as te
from tflite_export import files

from .cli_donna import add_donna_parser
from .cli_inputs import (
    BUILTIN_DATASET,
    DEFAULT_REP_SAMPLES,
    EXIT_FILE_ERROR,
    CliError,
    check_output_files,
    check_output_folder,
    existing_file,
    float_range,
    int_range,
    load_inputs,
    load_keras_model,
    read_tflite,
    several_inputs_hint,
)
from .cli_inputs import positive_int as _positive_int
from .cli_logs import quiet_tensorflow_import

EXIT_OK = 0
EXIT_BAD_INPUT = 1  # usage error, missing/corrupt/mis-shaped input, output exists without --force
EXIT_VERIFY_FAILED = 2  # TFLite Micro differs from LiteRT beyond tolerance, or cannot run the model
EXIT_EXPORT_FAILED = 3  # the model cannot be converted (float islands, unsupported ops, converter errors, ranges
#                        never set)
EXIT_INTERNAL = 4  # an unexpected error: a bug in keras-eff
# EXIT_FILE_ERROR = 5 (from cli_inputs): a path cannot be read or written
EXIT_TERMINATED = 128 + signal.SIGTERM  # stopped by SIGTERM, as a shell reports it

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  success
  {EXIT_BAD_INPUT}  bad input or usage: a missing, corrupt or mis-shaped file, a bad option, or an output file
     that exists without --force (nothing is written)
  {EXIT_VERIFY_FAILED}  verification failed: TFLite Micro's outputs differ from LiteRT's by more than --max-lsb, or
     TFLite Micro cannot run the model
  {EXIT_EXPORT_FAILED}  export failed: the model cannot be converted as asked (float islands in an int8 model,
     ops TFLite Micro lacks, converter errors, a quantized model whose activation ranges were never set by
     calibration or training); nothing is written
  {EXIT_INTERNAL}  unexpected internal error (a bug: please report it with the traceback)
  {EXIT_FILE_ERROR}  a file or folder cannot be read or written: permission denied, a file where a folder is
     needed (or the reverse), a full disk, a read-only file system; output paths are checked before any
     work, and a failed write leaves the old files as they were
  {EXIT_TERMINATED}  stopped by SIGTERM (130 for Ctrl-C): no partial or temporary files are left"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with EXIT_BAD_INPUT like every other bad input."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def _say(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _demo(args) -> int:
    check_output_folder(args.out)
    from .demo import DemoConfig, mcu_stage, run_demo  # noqa: PLC0415 - start-up: imports TensorFlow

    run_demo(
        DemoConfig(
            out_dir=args.out,
            epochs=args.epochs,
            qat_epochs=args.qat_epochs,
            n_train=args.train_samples,
            n_test=args.test_samples,
            seed=args.seed,
        ),
        stages=[("Microcontroller package and report (out/mcu)", mcu_stage)],
    )
    return EXIT_OK


def _inputs(model) -> list:
    """The model's inputs as (name, shape without the batch axis), in the model's order."""
    return [(t.name, tuple(t.shape[1:])) for t in model.inputs]


def _needs_data(inputs, option: str, what: str) -> str:
    if len(inputs) == 1:
        return f"pass {option} FILE.npy ({what})"
    return f"pass {option} with {several_inputs_hint([n for n, _ in inputs])} ({what})"


def _rep_data(args, model):
    """Representative data for int8 calibration: the --rep-data file, else the built-in dataset if it fits; for
    several inputs, one array per input in the model's order."""
    spec, inputs = args.rep_data, _inputs(model)
    if spec is None:
        if te.has_fake_quant(model):
            return None  # a QAT model carries its own ranges
        if [shape for _, shape in inputs] != [(28, 28, 1)]:
            shapes = ", ".join(str(shape) for _, shape in inputs)
            raise CliError(
                f"model {model.name!r} is a float model with input{'s' if len(inputs) > 1 else ''} {shapes}: int8 "
                f"export needs representative data; {_needs_data(inputs, '--rep-data', 'a few hundred typical inputs')}"
            )
        spec = BUILTIN_DATASET
        _say(f"Calibrating with {args.rep_samples} built-in Fashion-MNIST training images (--rep-data to change)")
    x = load_inputs(spec, inputs, args.rep_samples, "representative data")
    return [x[name] for name, _ in inputs] if isinstance(x, dict) else x


def _int8_tflite(args, model, rep, batch_size=None) -> bytes:
    """The full-int8 file; a quantized model whose ranges were never set is refused (unless --allow-uncalibrated)."""
    try:
        return te.to_tflite(
            model,
            representative_data=rep,
            max_samples=args.rep_samples,
            allow_uncalibrated=args.allow_uncalibrated,
            batch_size=batch_size,
        )
    except te.UncalibratedModelError as err:
        layer, names = err.layers[0]
        raise CliError(
            f"{args.model} is a quantized model whose activation ranges were never set, by calibration or by "
            f"training (the first in layer {layer!r}: {', '.join(names)}): its int8 file would compute on "
            f"placeholder ranges, and --rep-data cannot replace them. In Python, call keras_eff.calibrate(model, x) "
            f"with a few hundred typical inputs (or train the model), save it again, and export that file; "
            f"--allow-uncalibrated exports it anyway (for size or latency only)",
            EXIT_EXPORT_FAILED,
        ) from err


def _check_data(args, inputs, required: bool):
    """Check data for ``inputs`` ([(name, shape)]): the --data file, else the built-in test images if they fit; an
    array, or a dict keyed by input name for several inputs. None where not required and nothing fits."""
    spec = args.data
    if spec is None:
        if [shape for _, shape in inputs] != [(28, 28, 1)]:
            shapes = ", ".join(str(shape) for _, shape in inputs)
            if required:
                raise CliError(
                    f"the model input{'s are' if len(inputs) > 1 else ' is'} {shapes}, not Fashion-MNIST's "
                    f"(28, 28, 1): {_needs_data(inputs, '--data', 'inputs for the check')}"
                )
            _say(f"No --data for input shape {shapes}: the TFLite Micro vs LiteRT check is skipped")
            return None
        spec = BUILTIN_DATASET
    return load_inputs(spec, inputs, args.samples, "check data", split="test")


def _tflite_inputs(data: bytes) -> list:
    """A TFLite file's inputs as (name, shape without the batch axis), in the file's order."""
    tfl = te.TFLiteModel(data)
    return [(name, tuple(int(s) for s in d["shape"][1:])) for name, d in zip(tfl.input_names, tfl.inputs)]


def _preflight(out_dir: Path, names, force: bool, option: str = "--out"):
    """Fails before any slow work when an output cannot be written: it exists and --force was not given (exit 1), or
    its path is wrong (a file where a folder is needed, a folder, no permission: exit 5)."""
    check_output_files([out_dir / n for n in names], force, option)


def _export(args) -> int:
    _check_target(args)
    name = _checked_c_name(args.name) if args.name else _c_name(Path(args.model).stem)
    out = Path(args.out or f"{Path(args.model).stem}_export")
    c_names = [f"{name}.h", f"{name}.c", f"{name}_op_resolver.h"]
    if args.target:
        device_names = c_names + [f"{name}_vela.tflite", f"{name}_ethos_u.md", f"{name}_ethos_u.json"]
    else:
        device_names = c_names + [f"{name}_micro.json"] if not args.no_micro else []
    names = (
        [f"{name}.tflite"]
        + device_names
        + ([f"{name}.onnx"] if args.onnx else [])
        + ([f"{name}_float.tflite"] if args.float else [])
    )
    existing_file(args.model, "model file")
    _preflight(out, names, args.force, "-o/--out")
    model = load_keras_model(args.model)
    rep = _rep_data(args, model)
    inputs = _inputs(model)
    micro = not args.no_micro and not args.target
    check_x = _check_data(args, inputs, required=False) if (args.onnx or micro) else None
    _say(f"Converting {args.model} to int8 TFLite (batch 1, static shapes)")
    int8 = _int8_tflite(args, model, rep, batch_size=1)
    files = {f"{name}.tflite": int8}
    if args.float:
        files[f"{name}_float.tflite"] = te.to_tflite(model, quantize=False)
    if args.target:
        _say(f"Compiling for {args.target} with Vela")
        compiled = _compile_ethos_u(args, int8)
        files.update(compiled.files(name))
        print(compiled.report)
    if micro:
        _say("Building the microcontroller package (arena search and TFLite Micro check in a child process)")
        pkg = te.micro_package(int8, name=name, x=check_x, margin=args.arena_margin, source_note=Path(args.model).name)
        files.update({k: v for k, v in pkg.files().items() if k != f"{name}.tflite"})
        print(pkg)
    if args.onnx:
        _say("Exporting ONNX with tf2onnx")
        onnx = te.to_onnx(model, opset=args.opset, allow_uncalibrated=args.allow_uncalibrated)
        if check_x is not None or rep is not None:
            from tflite_export.micro_check import head_of_inputs  # noqa: PLC0415 - after start-up

            x = head_of_inputs(check_x if check_x is not None else rep, 200)
            if isinstance(x, dict):  # compare_onnx takes the model's order
                x = [x[name] for name, _ in inputs]
            for optimize in (False, True):
                print(te.compare_onnx(model, onnx, x, optimize=optimize))
        files[f"{name}.onnx"] = onnx
    written = te.write_files(out, files, overwrite=args.force)
    print(f"Wrote {len(written)} files to {out}: {', '.join(sorted(p.name for p in written))}")
    return EXIT_OK


def _check_target(args):
    """Checks --target, --vela-config, --system-config and --memory-mode before any slow work (unknown names list the
    valid ones)."""
    if not getattr(args, "target", None):
        for opt in ("vela_config", "system_config", "memory_mode"):
            if getattr(args, opt, None):
                raise CliError(
                    f"--{opt.replace('_', '-')} configures Vela: it needs --target (e.g. --target ethos-u55-128)"
                )
        return
    try:
        te.check_ethos_u_options(args.target, args.system_config, args.memory_mode, args.vela_config)
    except te.EthosUError as err:
        raise CliError(str(err)) from None


def _compile_ethos_u(args, int8: bytes):
    return te.compile_ethos_u(
        int8, args.target, system_config=args.system_config, memory_mode=args.memory_mode, config_file=args.vela_config
    )


def _checked_c_name(name: str) -> str:
    try:
        return te.check_c_name(name)
    except ValueError as err:
        raise CliError(f"--name: {err}") from None


def _c_name(stem: str) -> str:
    """A C identifier from a file name: other characters become '_', and a digit start or a keyword gets 'model'."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in stem) or "model"
    if not (cleaned[:1].isalpha() or cleaned[:1] == "_"):
        cleaned = f"model_{cleaned}"
    try:
        return te.check_c_name(cleaned)
    except ValueError:  # a C keyword such as 'float'
        return f"{cleaned}_model"


def _report(args) -> int:
    _check_target(args)
    path = existing_file(args.model, "model file")
    if args.out:
        stem = Path(args.out)
        _preflight(stem.parent, [f"{stem.name}.md", f"{stem.name}.json"], args.force, "-o/--out")
    float_tfl = None
    if path.suffix == ".keras":
        model = load_keras_model(path)
        rep = _rep_data(args, model)
        _say(f"Converting {path} to int8{'' if args.target else ' and float'} TFLite")
        int8 = _int8_tflite(args, model, rep, batch_size=1 if args.target else None)
        if not args.target:
            float_tfl = te.to_tflite(model, quantize=False)
    else:
        int8 = read_tflite(path)
        if args.float_tflite:
            float_tfl = read_tflite(args.float_tflite)
    if args.target:
        _say(f"Compiling for {args.target} with Vela")
        report = _compile_ethos_u(args, int8).report
        _print_and_write(args, report.to_markdown(f"Ethos-U report: {path.name}"), report.to_json())
        return EXIT_OK
    x = _check_data(args, _tflite_inputs(int8), required=False)
    _say("Measuring: MACs, ops, TFLite Micro support, arena, LiteRT latency")
    report = te.model_report(
        int8, float_model=float_tfl, x=x, name=path.name, latency_runs=args.latency_runs, margin=args.arena_margin
    )
    _print_and_write(args, report.to_markdown(), report.to_json())
    for w in report.warnings:
        _say(f"WARNING: {w}")
    return EXIT_OK


def _print_and_write(args, markdown: str, json_text: str):
    """Prints the report (markdown, or JSON with --json) and, with -o STEM, writes STEM.md and STEM.json."""
    print(json_text if args.json else markdown, end="")
    if args.out:
        stem = Path(args.out)
        written = te.write_files(
            stem.parent, {f"{stem.name}.md": markdown, f"{stem.name}.json": json_text}, overwrite=args.force
        )
        _say(f"Wrote {', '.join(str(p) for p in written)}")


def _verify(args) -> int:
    existing_file(args.model, "TFLite file")
    if args.out:
        _preflight(Path(args.out).parent, [Path(args.out).name], args.force, "-o/--out")
    data = read_tflite(args.model)
    x = _check_data(args, _tflite_inputs(data), required=True)
    try:
        arena = args.arena or te.find_arena_size(data, margin=args.arena_margin).recommended_bytes
        kernels = args.kernels or ("xnnpack" if args.xnnpack else None)
        check = te.check_micro(data, x, arena_size=arena, kernels=kernels)
    except te.MicroRuntimeError as err:
        raise CliError(f"verification failed: {err}", EXIT_VERIFY_FAILED) from err
    ok = check.passed(max_lsb=args.max_lsb)
    print(check)
    if args.out:
        files.atomic_write_json(
            args.out,
            {"model": str(args.model), "passed": ok, "max_lsb_allowed": args.max_lsb, **check.as_dict()},
            overwrite=args.force,
        )
    if not ok:
        _say(
            f"verification failed: TFLite Micro differs from {check.reference} by up to {check.max_lsb_diff} LSB "
            f"(allowed: {args.max_lsb})"
        )
        return EXIT_VERIFY_FAILED
    return EXIT_OK


def _add_data_args(p, data_help: str, default_samples: int):
    p.add_argument("--data", metavar="FILE", help=data_help)
    p.add_argument(
        "--samples",
        type=_positive_int,
        default=default_samples,
        metavar="N",
        help="use the first N samples of --data (default: %(default)s)",
    )


def _add_rep_args(p):
    p.add_argument(
        "--rep-data",
        metavar="FILE",
        help=f"representative inputs for int8 calibration: a .npy/.npz file "
        f"(read without pickle; .npz: the array 'x'; several inputs: one array per input, keyed by input name) or "
        f"'{BUILTIN_DATASET}'. Default: none for QAT models "
        f"(their ranges are used), Fashion-MNIST for 28x28x1 float models",
    )
    p.add_argument(
        "--rep-samples",
        type=_positive_int,
        default=DEFAULT_REP_SAMPLES,
        metavar="N",
        help="calibrate on the first N representative inputs (default: %(default)s)",
    )
    p.add_argument(
        "--allow-uncalibrated",
        action="store_true",
        help="export a quantized model whose activation ranges were never set (by keras_eff.calibrate or "
        "training) anyway, on its placeholder ranges: for size or latency only (refused by default, "
        "exit 3)",
    )


def _add_target_args(p):
    g = p.add_argument_group("Arm Ethos-U NPU (compiled with Vela)")
    g.add_argument(
        "--target",
        metavar="NAME",
        help="an Ethos-U configuration: ethos-u55-32/64/128/256, "
        "ethos-u65-256/512, ethos-u85-128/256/512/1024/2048. export writes NAME_vela.tflite, its C array "
        "and op resolver (the ethos-u op plus any CPU op) and NAME_ethos_u.md/.json instead of the "
        "microcontroller package; report prints Vela's report (ops on NPU/CPU with reasons, cycles, "
        "time, SRAM, flash)",
    )
    g.add_argument(
        "--vela-config",
        metavar="FILE.ini",
        help="a Vela configuration file of your own (default: the Arm/vela.ini that ships with Vela)",
    )
    g.add_argument(
        "--system-config",
        metavar="NAME",
        help="a system configuration of the Vela configuration file, "
        "e.g. Ethos_U55_High_End_Embedded (default: Vela's for the accelerator)",
    )
    g.add_argument(
        "--memory-mode",
        metavar="NAME",
        help="a memory mode of the Vela configuration file, e.g. Shared_Sram (default: Vela's for the accelerator)",
    )


_fraction = float_range(0, 10, note=" (0.25 = 25%)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="keras-eff",
        description="Shrink Keras 3 models and deploy them as int8 TFLite.",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train a small CNN on Fashion-MNIST, quantize and export it, print a table",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    demo.add_argument("--out", default="artifacts/demo", help="folder for the artifacts (default: %(default)s)")
    demo.add_argument(
        "--epochs",
        type=int_range(1, 1000),
        default=3,
        metavar="N",
        help="training epochs, 1 to 1,000 (default: %(default)s)",
    )
    demo.add_argument(
        "--qat-epochs",
        type=int_range(0, 1000),
        default=1,
        metavar="N",
        help="quantization-aware training epochs, 0 (calibration only) to 1,000 (default: %(default)s)",
    )
    demo.add_argument(
        "--train-samples",
        type=int_range(10, 60_000, " (10%% go to validation)"),
        default=None,
        metavar="N",
        help="use only the first N training images, 10 to 60,000 (default: all)",
    )
    demo.add_argument(
        "--test-samples",
        type=int_range(1, 10_000),
        default=None,
        metavar="N",
        help="use only the first N test images, 1 to 10,000 (default: all)",
    )
    demo.add_argument(
        "--seed",
        type=int_range(0, 2**32 - 1),
        default=0,
        metavar="N",
        help="random seed, 0 to 2**32-1 (default: %(default)s)",
    )
    demo.set_defaults(func=_demo)

    export = sub.add_parser(
        "export",
        help="a .keras model to int8 TFLite, a C array for TFLite Micro, and optionally ONNX",
        description=_wrap(
            "Converts a .keras model (loaded in Keras's safe mode) to a full-int8 TFLite file and its "
            "microcontroller package: NAME.h/NAME.c (the model as an aligned byte array with its length and "
            "I/O quantization), NAME_op_resolver.h (the ops to register), NAME_micro.json (tensor arena "
            "estimate, TFLite Micro vs LiteRT check); with --target, the Vela-compiled file for an Arm Ethos-U "
            "NPU, its C array and op resolver, and Vela's report instead. Files for devices have batch 1 and "
            "static shapes. All files are written at once, none on failure."
        ),
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    export.add_argument("model", help="the .keras file")
    export.add_argument("-o", "--out", metavar="DIR", help="output folder (default: MODEL_export)")
    export.add_argument("--name", help="C identifier and file name stem (default: from the model file name)")
    _add_rep_args(export)
    _add_data_args(
        export,
        f"inputs for the TFLite Micro check (.npy/.npz, keyed by input name for several, or '{BUILTIN_DATASET}'; "
        f"default: "
        f"Fashion-MNIST test images for 28x28x1 models, else no check)",
        200,
    )
    export.add_argument("--onnx", action="store_true", help="also write NAME.onnx (tf2onnx) and compare it with Keras")
    export.add_argument(
        "--opset", type=int_range(13, 21), default=17, metavar="N", help="ONNX opset, 13 to 21 (default: %(default)s)"
    )
    export.add_argument("--float", action="store_true", help="also write the float TFLite file NAME_float.tflite")
    export.add_argument("--no-micro", action="store_true", help="skip the microcontroller package")
    _add_target_args(export)
    export.add_argument(
        "--arena-margin",
        type=_fraction,
        default=0.25,
        metavar="F",
        help="margin added to the host arena estimate (default: %(default)s = 25%%)",
    )
    export.add_argument("--force", action="store_true", help="replace existing output files")
    export.set_defaults(func=_export)

    report = sub.add_parser(
        "report",
        help="size, parameters, MACs, ops, TFLite Micro support, arena and latency of a model",
        description=_wrap(
            "Reports on a .keras model (converted to int8 and float TFLite here) or an int8 .tflite "
            "file: file and gzip size, parameters, MACs per op and in total, the ops and whether TFLite "
            "Micro runs them (with a warning when not), the tensor arena estimate, LiteRT latency int8 vs "
            "float, and the TFLite Micro vs LiteRT check. Prints markdown (or JSON with --json); -o writes "
            "both."
        ),
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    report.add_argument("model", help="a .keras file or an int8 .tflite file")
    report.add_argument("-o", "--out", metavar="STEM", help="write STEM.md and STEM.json")
    report.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    report.add_argument(
        "--float-tflite", metavar="FILE", help="the float .tflite for the latency comparison (for a .tflite MODEL)"
    )
    _add_rep_args(report)
    _add_data_args(
        report,
        f"inputs for the TFLite Micro check (.npy/.npz, keyed by input name for several, or '{BUILTIN_DATASET}'; "
        f"default: "
        f"Fashion-MNIST test images for 28x28x1 models, else no check)",
        200,
    )
    report.add_argument(
        "--latency-runs",
        type=int_range(0),
        default=200,
        metavar="N",
        help="batch-1 runs per latency round, 0 to skip (default: %(default)s)",
    )
    report.add_argument(
        "--arena-margin",
        type=_fraction,
        default=0.25,
        metavar="F",
        help="margin added to the host arena estimate (default: %(default)s)",
    )
    report.add_argument("--force", action="store_true", help="replace existing output files")
    _add_target_args(report)
    report.set_defaults(func=_report)

    verify = sub.add_parser(
        "verify",
        help="check that TFLite Micro computes what LiteRT computes on the same inputs",
        description=_wrap(
            "Runs the same inputs through TFLite Micro (its Python interpreter, in a child process) and "
            "LiteRT and compares the raw outputs: share of bit-exact samples and the largest difference in "
            "output quantization steps (LSB). Exits 2 when it exceeds --max-lsb."
        ),
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    verify.add_argument("model", help="a .tflite file")
    _add_data_args(
        verify,
        f"inputs (.npy/.npz of float samples, keyed by input name for several inputs, or '{BUILTIN_DATASET}', the "
        f"default for 28x28x1 models)",
        200,
    )
    verify.add_argument(
        "--max-lsb",
        type=int_range(0, 255),
        default=1,
        metavar="K",
        help="largest allowed difference in output steps, 0 to 255 (default: %(default)s)",
    )
    verify.add_argument(
        "--arena",
        type=_positive_int,
        metavar="BYTES",
        help="tensor arena size (default: the host estimate plus --arena-margin)",
    )
    verify.add_argument(
        "--arena-margin",
        type=_fraction,
        default=0.25,
        metavar="F",
        help="margin added to the host arena estimate (default: %(default)s)",
    )
    kernels = verify.add_mutually_exclusive_group()
    kernels.add_argument(
        "--kernels",
        choices=["builtin", "reference", "xnnpack"],
        help="the LiteRT kernels compared with: its optimized built-in kernels (default), its "
        "reference kernels (whose ADD rounds as TFLite Micro's: use them for residual "
        "networks) or the XNNPACK delegate",
    )
    kernels.add_argument("--xnnpack", action="store_true", help="the same as --kernels xnnpack")
    verify.add_argument(
        "-o", "--out", metavar="FILE.json", help="also write the result as JSON (checked before the verification runs)"
    )
    verify.add_argument("--force", action="store_true", help="replace an existing --out file")
    verify.set_defaults(func=_verify)

    add_donna_parser(sub, fmt, EXIT_CODES)
    return parser


def main(argv=None) -> int:
    # TensorFlow reads this when it is imported, which only a command does: set here, before any import of it; a
    # value the user set is kept. Its first log lines ignore it: quiet_tensorflow_import filters them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (EXIT_BAD_INPUT)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    name = f"keras-eff {args.command}" + (f" {args.donna_command}" if getattr(args, "donna_command", None) else "")
    # SIGTERM raises files.Terminated: the writes in progress remove their temporary files and put back what they
    # replaced, as for Ctrl-C
    with files.cleanup_on_termination(), quiet_tensorflow_import():
        try:
            return args.func(args)
        except CliError as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            return err.code
        except te.TFLiteExportError as err:  # float islands, ops TFLite Micro lacks, converter failures
            print(f"{name}: export failed: {err}", file=sys.stderr)
            return EXIT_EXPORT_FAILED
        except (FileExistsError, FileNotFoundError) as err:
            print(f"{name}: error: {files.describe_os_error(err)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except OSError as err:  # permissions, a file where a folder is needed, a full disk: not a bug
            print(f"{name}: error: {files.describe_os_error(err)}", file=sys.stderr)
            return EXIT_FILE_ERROR
        except (ValueError, TypeError) as err:
            print(f"{name}: error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print(f"{name}: interrupted; no partial or temporary files were left", file=sys.stderr)
            return 130
        except files.Terminated as err:
            print(f"{name}: {err}; no partial or temporary files were left", file=sys.stderr)
            return 128 + err.signum
        except Exception:  # noqa: BLE001 - the last resort: anything else is a bug, reported with its traceback
            traceback.print_exc()
            print(
                f"{name}: unexpected internal error (a bug: please report it with the traceback above)", file=sys.stderr
            )
            return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
