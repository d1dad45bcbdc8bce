"""What the command line reads: `.keras` models (safe mode), TFLite files and sample arrays, each with a clear error."""

from __future__ import annotations

import argparse
import math
import os
import zipfile
from pathlib import Path

import numpy as np

import keras_eff  # noqa: F401 - registers keras-eff's Keras classes before load_keras_model loads a file (lazily)
import tflite_export as te  # its names load on first use: no TensorFlow here
from tflite_export import files

from .datasets import fashion_mnist_float

BUILTIN_DATASET = "fashion-mnist"
DEFAULT_REP_SAMPLES = 500
EXIT_FILE_ERROR = 5  # a file or folder cannot be read or written (permissions, a file where a folder is needed, ...)


class CliError(Exception):
    """A message for the user and the exit code the command ends with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def existing_file(path, what: str) -> Path:
    """``path`` as a Path, if it is a readable file; a CliError naming ``what`` and the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise CliError(f"{what} {str(p)!r} is not a file" + (" but a folder" if p.is_dir() else ""))
    try:
        with open(p, "rb"):
            pass
    except OSError as err:
        raise CliError(
            f"{what} {str(p)!r} cannot be read: {files.describe_os_error(err, 'read')}", EXIT_FILE_ERROR
        ) from None
    return p


def load_keras_model(path):
    """Loads a `.keras` file in Keras's safe mode (no arbitrary code: Lambda layers holding Python are refused)."""
    p = existing_file(path, "model file")
    import keras  # noqa: PLC0415 - start-up: imports TensorFlow (seconds); the parser and --help must not

    if p.suffix != ".keras":
        raise CliError(
            f"{str(p)!r} is not a .keras file: save the model with model.save('model.keras') (Keras 3 "
            f"format); a .tflite file goes to `keras-eff report` or `keras-eff verify`"
        )
    if not zipfile.is_zipfile(p):
        raise CliError(
            f"{str(p)!r} is not a valid .keras file (a .keras file is a zip archive): the file is corrupt "
            f"or truncated; save the model again"
        )
    try:
        model = keras.saving.load_model(p, safe_mode=True)
    except OSError as err:  # the file system, not the file's content (permissions, I/O errors)
        raise CliError(f"cannot load {str(p)!r}: {files.describe_os_error(err, 'read')}", EXIT_FILE_ERROR) from err
    except Exception as err:  # Keras raises many types for a bad archive; all mean the same to the user
        raise CliError(
            f"cannot load {str(p)!r} as a Keras model: {type(err).__name__}: {err}. The file is "
            f"corrupt, uses custom layers that are not registered, or needs unsafe deserialization "
            f"(Lambda layers), which keras-eff refuses"
        ) from err
    if not isinstance(model, keras.Model):
        raise CliError(f"{str(p)!r} holds a {type(model).__name__}, not a Keras model")
    return model


def read_tflite(path) -> bytes:
    p = existing_file(path, "TFLite file")
    try:
        data = te.read_model(p)
        te.make_interpreter(data, use_xnnpack=False)
    except te.InvalidTFLiteModel as err:
        raise CliError(str(err)) from err
    return data


def _from_npy(p: Path, every: bool = False):
    """The array of a .npy file, or of a one-array .npz (or its 'x'); with ``every``, every array of an .npz, by key."""
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise CliError(
                f"{str(p)!r} holds Python objects (a pickled array); keras-eff never unpickles data. Save "
                f"a numeric array instead: np.save(path, np.asarray(x, dtype='float32'))"
            ) from err
        raise CliError(f"{str(p)!r} is not a readable .npy/.npz file: {err}") from err
    except (PermissionError, IsADirectoryError) as err:
        raise CliError(f"cannot read {str(p)!r}: {files.describe_os_error(err, 'read')}", EXIT_FILE_ERROR) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise CliError(f"{str(p)!r} is not a readable .npy/.npz file (corrupt or truncated): {err}") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if every:
                return {key: _npz_array(loaded, key, p) for key in keys}
            key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise CliError(
                    f"{str(p)!r} holds several arrays ({', '.join(keys) or 'none'}); store the model "
                    f"inputs under the key 'x' (np.savez(path, x=inputs))"
                )
            return _npz_array(loaded, key, p)
    return loaded


def _npz_array(npz, key: str, p: Path):
    try:
        return npz[key]
    except ValueError as err:
        raise CliError(
            f"array {key!r} in {str(p)!r} holds Python objects (pickled); keras-eff never unpickles data: save a "
            f"numeric array"
        ) from err


def load_samples(
    spec, model_input_shape, count: int = DEFAULT_REP_SAMPLES, what: str = "representative data", split: str = "train"
):
    """Samples for the model's input: ``spec`` is a .npy/.npz path or ``fashion-mnist`` (the built-in images of
    ``split``, 'train' or 'test').

    ``model_input_shape`` is the input shape without the batch axis (None for free axes). Returns float32 (n, ...).
    """
    if count < 1:
        raise CliError(f"the sample count must be at least 1, got {count}")
    shape = tuple(model_input_shape)
    if spec == BUILTIN_DATASET:
        if shape != (28, 28, 1):
            raise CliError(
                f"the built-in dataset holds 28x28x1 images but the model input is {shape}; give "
                f"{what} as a .npy/.npz file"
            )
        (x_train, _), (x_test, _) = fashion_mnist_float(n_train=count, n_test=count)
        return x_train if split == "train" else x_test
    p = existing_file(spec, f"{what} file")
    if p.suffix not in (".npy", ".npz"):
        raise CliError(f"{what} must be a .npy or .npz file (or '{BUILTIN_DATASET}'), got {str(p)!r}")
    return _checked(_from_npy(p), shape, f"{what} in {str(p)!r}", count)


def _checked(x, shape, where: str, count: int):
    """``x`` as float32 (at most ``count`` samples) if it is numeric, finite, non-empty and of shape (n, *shape)."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise CliError(f"{where} is of type {x.dtype}; it must be numeric")
    expected = "(n, " + ", ".join("any" if s is None else str(s) for s in shape) + ")"
    if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:])):
        hint = ""
        if x.ndim == len(shape) and shape[-1] == 1 and tuple(x.shape[1:]) == tuple(shape[:-1]):
            hint = " (add the channel axis: x[..., None])"
        raise CliError(f"{where} has shape {x.shape}, but the model expects {expected}{hint}")
    if len(x) == 0:
        raise CliError(f"{where} holds no samples")
    x = x[:count].astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise CliError(f"{where} holds NaN or infinite values")
    return x


def several_inputs_hint(names) -> str:
    """How to store samples for a model with several inputs."""
    keys = ", ".join(f"{n!r}: x{i}" for i, n in enumerate(names))
    return f"an .npz file with one array per input, keyed by the input names (np.savez(path, **{{{keys}}}))"


def load_inputs(spec, inputs, count: int = DEFAULT_REP_SAMPLES, what: str = "representative data", split="train"):
    """Samples for a model's inputs, ``inputs`` being ``[(name, shape without the batch axis), ...]``: for one input,
    what `load_samples` reads (an array); for several, an .npz with one array per input keyed by the input names
    (a dict name -> float32 array, each checked as `load_samples` checks one, all with the same number of samples)."""
    if len(inputs) == 1:
        return load_samples(spec, inputs[0][1], count, what, split)
    names = [name for name, _ in inputs]
    if spec == BUILTIN_DATASET:
        raise CliError(
            f"the built-in dataset serves one-input models; this model takes {len(names)} inputs "
            f"({', '.join(names)}): give {what} as {several_inputs_hint(names)}"
        )
    p = existing_file(spec, f"{what} file")
    if p.suffix != ".npz":
        raise CliError(
            f"{what} for a model with {len(names)} inputs must be {several_inputs_hint(names)}, got {str(p)!r}"
        )
    arrays = _from_npy(p, every=True)
    missing, unknown = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
    if missing or unknown:
        raise CliError(
            f"{what} in {str(p)!r} holds the arrays {sorted(arrays) or 'none'}, but the model's inputs are "
            f"{names}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (not inputs: {', '.join(unknown)})" if unknown else "")
        )
    out = {name: _checked(arrays[name], shape, f"{what} array {name!r} in {str(p)!r}", count) for name, shape in inputs}
    counts = {name: len(a) for name, a in out.items()}
    if len(set(counts.values())) > 1:
        raise CliError(f"the arrays of {what} in {str(p)!r} hold different numbers of samples: {counts}")
    return out


def int_range(low: int, high: int | None = None, note: str = ""):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound if None). argparse names the option in
    the error: ``argument --max-lsb: must be an integer from 0 to 255, got -1``."""
    if high is not None:
        allowed = f"an integer from {low:,} to {high:,}"
    else:
        allowed = "a positive integer" if low == 1 else f"an integer of {low:,} or more"

    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}{note}, got {text!r}") from None
        if n < low or (high is not None and n > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}{note}, got {n}")
        return n

    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float | None = None, low_inclusive: bool = True, note: str = ""):
    """An argparse type: a finite number from ``low`` (or above it, if not ``low_inclusive``) to ``high``."""
    if high is not None:
        allowed = f"a number from {low:g} to {high:g}"
    elif low_inclusive:
        allowed = f"a number of {low:g} or more"
    else:
        allowed = "a positive number" if low == 0 else f"a number above {low:g}"

    def parse(text):
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}{note}, got {text!r}") from None
        if not math.isfinite(f) or f < low or (f == low and not low_inclusive) or (high is not None and f > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}{note}, got {text}")
        return f

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
"""An argparse type: an integer of 1 or more."""


def check_output_folder(folder, option: str = "--out") -> Path:
    """Fails at once, before any slow work, when ``folder`` cannot be an output folder (a file, or not writable)."""
    try:
        return files.check_output_folder(folder)
    except OSError as err:
        raise CliError(f"{files.describe_os_error(err, 'write')} (given as {option})", EXIT_FILE_ERROR) from None


def check_output_files(paths, force: bool, option: str = "--out") -> list:
    """Fails at once, before any slow work, when the output files cannot be written: one exists without --force
    (exit 1), or the path is wrong (a file where a folder is needed, a folder, no permission: EXIT_FILE_ERROR)."""
    try:
        paths = files.check_targets(paths, overwrite=True)
    except OSError as err:
        raise CliError(f"{files.describe_os_error(err, 'write')} (given as {option})", EXIT_FILE_ERROR) from None
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing and not force:
        raise CliError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force to "
            f"replace {'it' if len(existing) == 1 else 'them'}, or choose another {option}"
        )
    return paths
