"""The command line's start-up, file-system errors, signals and numeric options: fast tests that need no model
conversion (the output paths are checked before any)."""

import argparse
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keras_eff import cli, cli_inputs, cli_logs

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: the command line sets its own default


def _python(code: str, timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=kw.get("cwd", ROOT),
    )


# --- start-up (D8) -------------------------------------------------------------------------------------------------


def test_help_prints_usage_with_no_tensorflow_and_no_log_lines():
    done = subprocess.run(
        [sys.executable, "-m", "keras_eff.cli", "--help"], capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: keras-eff")
    assert done.stderr == ""  # no TensorFlow log lines
    commands = [
        "--help",
        "demo --help",
        "export --help",
        "report --help",
        "verify --help",
        "donna --help",
        "donna run --help",
        "donna search --help",
        "donna config --help",
        "verify m.tflite --max-lsb -1",
        "",
    ]
    done = _python(f"""
        import sys
        from keras_eff.cli import main
        for argv in {commands!r}:
            print(repr(argv), main(argv.split()), flush=True)
        heavy = sorted(m for m in ("tensorflow", "keras", "onnx", "tf2onnx", "ai_edge_litert") if m in sys.modules)
        print("heavy:", heavy)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("heavy: []"), done.stdout[-500:]
    assert "'verify m.tflite --max-lsb -1' 1" in done.stdout and "'' 1" in done.stdout
    assert done.stdout.count(" 0\n") == len(commands) - 2
    assert "I0000" not in done.stderr and "absl" not in done.stderr


def test_importing_keras_eff_imports_no_tensorflow():
    done = _python(
        "import sys, keras_eff, keras_eff.cli; print(sorted({'tensorflow', 'keras', 'numpy'} & set(sys.modules)))"
    )
    assert done.returncode == 0 and done.stdout.strip() == "['numpy']", done.stderr  # numpy: the CLI's input checks


def test_tensorflow_start_up_log_lines_are_filtered_by_tf_cpp_min_log_level():
    code = """
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "{level}"
        from keras_eff.cli_logs import quiet_tensorflow_import
        with quiet_tensorflow_import():
            import tensorflow
        import sys
        print("still here", file=sys.stderr)
    """
    quiet = _python(code.format(level=2), timeout=180)
    assert quiet.returncode == 0 and quiet.stderr == "still here\n", quiet.stderr


def test_filter_log_text():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796545674.014520   11886 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1796545676.779276   12182 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
        "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow\n"
        "W0000 00:00:1796545676.779276   12182 x.cc:1] a warning\n"
        "E0000 00:00:1796545676.779276   12182 x.cc:2] an error\n"
        "a line that is not a log record\n"
    )
    lines = text.splitlines(keepends=True)
    assert cli_logs.filter_log_text(text, 0) == text
    assert cli_logs.filter_log_text(text, 1) == "".join(lines[4:])
    assert cli_logs.filter_log_text(text, 2) == "".join(lines[5:])
    assert cli_logs.filter_log_text(text, 3) == lines[6]


# --- file-system errors: user errors, found before any work (D3) --------------------------------------------------


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "adir").mkdir()
    (tmp_path / "model.keras").write_bytes(b"never read: the output paths are checked first")
    (tmp_path / "model.tflite").write_bytes(b"never read either")
    return tmp_path


def _cases(d):
    afile, adir = str(d / "afile"), str(d / "adir")
    return {
        "export -o a file": (["export", str(d / "model.keras"), "-o", afile], f"{afile} is a file, not a folder"),
        "export -o below a file": (
            ["export", str(d / "model.keras"), "-o", f"{afile}/sub"],
            f"{afile} is a file, not a folder",
        ),
        "report -o below a file": (
            ["report", str(d / "model.tflite"), "-o", f"{afile}/stem"],
            f"{afile} is a file, not a folder",
        ),
        "verify -o a folder": (["verify", str(d / "model.tflite"), "-o", adir], f"{adir}: it is a folder, not a file"),
        "demo --out a file": (["demo", "--out", afile], f"{afile} is a file, not a folder"),
        "donna run --out a file": (["donna", "run", "--out", afile], f"{afile} is a file, not a folder"),
        "donna search --out below a file": (
            ["donna", "search", "--out", f"{afile}/run"],
            f"{afile} is a file, not a folder",
        ),
        "donna config -o a folder": (["donna", "config", "tiny", "-o", adir], f"{adir}: it is a folder, not a file"),
    }


@pytest.mark.parametrize("case", list(_cases(Path("/x"))))
def test_output_paths_are_checked_before_any_work(paths, case, capsys):
    argv, message = _cases(paths)[case]
    assert cli.main(argv) == cli.EXIT_FILE_ERROR == 5
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "bug" not in err
    assert (paths / "afile").read_text() == "a file, not a folder" and list((paths / "adir").iterdir()) == []


def test_export_to_a_file_fails_at_once_without_loading_tensorflow(paths):
    done = _python(f"""
        import sys, time
        from keras_eff.cli import main
        t = time.perf_counter()
        rc = main(["export", {str(paths / "model.keras")!r}, "-o", {str(paths / "afile")!r}])
        print(rc, "tensorflow" in sys.modules)
    """)
    assert done.stdout.split() == ["5", "False"], done.stderr
    assert f"{paths / 'afile'} is a file, not a folder" in done.stderr


def test_an_existing_output_without_force_is_refused_before_any_work(paths, capsys):
    (paths / "cfg.yaml").write_text("mine")
    assert cli.main(["donna", "config", "tiny", "-o", str(paths / "cfg.yaml")]) == cli.EXIT_BAD_INPUT
    assert "already exists; pass --force to replace it" in capsys.readouterr().err
    assert (paths / "cfg.yaml").read_text() == "mine"
    (paths / "r.md").write_text("mine")
    assert cli.main(["report", str(paths / "model.tflite"), "-o", str(paths / "r")]) == cli.EXIT_BAD_INPUT
    assert f"{paths / 'r.md'} already exists" in capsys.readouterr().err


def test_a_folder_without_write_permission_is_refused_before_any_work(paths, monkeypatch, capsys):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == paths / "adir" else real_access(p, mode))
    rc = cli.main(["export", str(paths / "model.keras"), "-o", str(paths / "adir" / "pkg")])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_FILE_ERROR and f"permission denied in {paths / 'adir'}" in err and "Traceback" not in err


def test_an_unreadable_input_is_a_file_error_naming_it(paths, monkeypatch, capsys):
    real_open = open

    def guarded_open(p, *a, **k):
        if Path(str(p)) == paths / "model.tflite":
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", guarded_open)
    assert cli.main(["verify", str(paths / "model.tflite")]) == cli.EXIT_FILE_ERROR
    err = capsys.readouterr().err
    assert f"cannot read {paths / 'model.tflite'}: permission denied" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "failure, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device; free some space"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    ],
)
def test_a_write_that_fails_is_a_file_error_naming_the_target(paths, monkeypatch, capsys, failure, expected):
    real_open = os.open

    def failing_open(path, *a, **k):  # the OS refuses the temporary file, as it would name it
        if ".cfg.json." in str(path):
            raise type(failure)(failure.errno, failure.strerror, str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", failing_open)
    target = paths / "cfg.json"
    assert cli.main(["donna", "config", "tiny", "-o", str(target)]) == cli.EXIT_FILE_ERROR
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and "bug" not in err
    assert list(paths.glob("cfg*")) == [] and list(paths.glob(".*.tmp")) == []


def test_sigterm_during_a_command_leaves_no_temporary_file(tmp_path):
    (tmp_path / "cfg.json").write_text("old")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import os, sys, time
        real_fsync = os.fsync
        def slow_fsync(fd):  # the file is staged: announce it and take a while
            real_fsync(fd)
            print("staged", flush=True)
            time.sleep(60)
        os.fsync = slow_fsync
        from keras_eff.cli import main
        sys.exit(main(["donna", "config", "tiny", "-o", {str(tmp_path / "cfg.json")!r}, "--force"]))
    """),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "staged"
    assert len(list(tmp_path.glob(".cfg.json.*.tmp"))) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_TERMINATED == 143, err
    assert "terminated by signal SIGTERM; no partial or temporary files were left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"] and (tmp_path / "cfg.json").read_text() == "old"


# --- numeric options (D9) ------------------------------------------------------------------------------------------

BAD_NUMBERS = [
    ("verify m.tflite --max-lsb -1", "argument --max-lsb: must be an integer from 0 to 255, got -1"),
    ("verify m.tflite --max-lsb 256", "argument --max-lsb: must be an integer from 0 to 255, got 256"),
    ("verify m.tflite --samples 0", "argument --samples: must be a positive integer, got 0"),
    ("verify m.tflite --arena 0", "argument --arena: must be a positive integer, got 0"),
    ("verify m.tflite --arena-margin -0.5", "argument --arena-margin: must be a number from 0 to 10 (0.25 = 25%)"),
    ("verify m.tflite --arena-margin nan", "argument --arena-margin: must be a number from 0 to 10"),
    ("demo --train-samples -5", "argument --train-samples: must be an integer from 10 to 60,000"),
    ("demo --train-samples 100000", "argument --train-samples: must be an integer from 10 to 60,000"),
    ("demo --test-samples 0", "argument --test-samples: must be an integer from 1 to 10,000, got 0"),
    ("demo --epochs -1", "argument --epochs: must be an integer from 1 to 1,000, got -1"),
    ("demo --epochs 0", "argument --epochs: must be an integer from 1 to 1,000, got 0"),
    ("demo --qat-epochs -1", "argument --qat-epochs: must be an integer from 0 to 1,000, got -1"),
    ("demo --seed -1", "argument --seed: must be an integer from 0 to 4,294,967,295, got -1"),
    ("demo --epochs three", "argument --epochs: must be an integer from 1 to 1,000, got 'three'"),
    ("export m.keras --rep-samples 0", "argument --rep-samples: must be a positive integer, got 0"),
    ("export m.keras --opset 12", "argument --opset: must be an integer from 13 to 21, got 12"),
    ("export m.keras --arena-margin 11", "argument --arena-margin: must be a number from 0 to 10"),
    ("report m.tflite --latency-runs -1", "argument --latency-runs: must be an integer of 0 or more, got -1"),
    ("donna search --out d --threads 0", "argument --threads: must be a positive integer, got 0"),
    ("donna search --out d --max-latency-us 0", "argument --max-latency-us: must be a positive number, got 0"),
    ("donna search --out d --max-latency-us inf", "argument --max-latency-us: must be a positive number, got inf"),
    ("donna search --out d --max-flash-bytes -1", "argument --max-flash-bytes: must be a positive integer, got -1"),
    ("donna search --out d --max-ram-bytes 0", "argument --max-ram-bytes: must be a positive integer, got 0"),
    ("donna search --out d --max-evals 1", "argument --max-evals: must be an integer of 2 or more, got 1"),
    ("donna search --out d --input-size 0x32", "argument --input-size: expected H, HxW or HxWxC with positive"),
    ("donna run --out d --image-size -3", "argument --image-size: expected H, HxW or HxWxC with positive"),
]


@pytest.mark.parametrize("argv, message", BAD_NUMBERS, ids=[a for a, _ in BAD_NUMBERS])
def test_numeric_options_name_the_option_and_the_allowed_range(argv, message, capsys):
    assert cli.main(argv.split()) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_boundary_values_are_accepted():
    parser = cli.build_parser()
    args = parser.parse_args("verify m.tflite --max-lsb 0 --arena-margin 0 --samples 1".split())
    assert (args.max_lsb, args.arena_margin, args.samples) == (0, 0.0, 1)
    args = parser.parse_args("demo --epochs 1 --qat-epochs 0 --train-samples 10 --test-samples 1 --seed 0".split())
    assert (args.epochs, args.qat_epochs, args.train_samples, args.test_samples, args.seed) == (1, 0, 10, 1, 0)
    args = parser.parse_args("report m.tflite --latency-runs 0 --arena-margin 10".split())
    assert (args.latency_runs, args.arena_margin) == (0, 10.0)
    args = parser.parse_args("donna search --out d --max-evals 2 --max-latency-us 0.5".split())
    assert (args.max_evals, args.max_latency_us) == (2, 0.5)


def _all_actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)
        else:
            yield parser.prog, action


def test_every_numeric_option_is_range_checked():
    unchecked = []
    for prog, action in _all_actions(cli.build_parser()):
        numeric = action.type in (int, float) or (
            isinstance(action.default, (int, float)) and not isinstance(action.default, bool)
        )
        if numeric and action.type in (None, int, float):
            unchecked.append(f"{prog} {action.option_strings}")
    assert unchecked == []
    numeric_options = [
        a for _, a in _all_actions(cli.build_parser()) if getattr(a.type, "__name__", "") in ("integer", "number")
    ]
    assert len(numeric_options) >= 20


def test_int_and_float_range_types():
    parse = cli_inputs.int_range(0, 255)
    assert parse("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer from 0 to 255, got '1.5'"):
        parse("1.5")
    fraction = cli_inputs.float_range(0, 1)
    assert fraction("0.5") == 0.5
    for bad in ("-0.1", "1.01", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a number from 0 to 1"):
            fraction(bad)
