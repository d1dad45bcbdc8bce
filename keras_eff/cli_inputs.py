"""What the command line reads: `.keras` models (safe mode), TFLite files and sample arrays, each with a clear error."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

BUILTIN_DATASET = "fashion-mnist"
DEFAULT_REP_SAMPLES = 500


class CliError(Exception):
    """A message for the user and the exit code the command ends with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _existing_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise CliError(f"{what} {str(p)!r} is not a file")
    return p


def load_keras_model(path):
    """Loads a `.keras` file in Keras's safe mode (no arbitrary code: Lambda layers holding Python are refused)."""
    import keras

    import keras_eff  # noqa: F401  (registers keras-eff's layers so that its models load)

    p = _existing_file(path, "model file")
    if p.suffix != ".keras":
        raise CliError(f"{str(p)!r} is not a .keras file: save the model with model.save('model.keras') (Keras 3 "
                       f"format); a .tflite file goes to `keras-eff report` or `keras-eff verify`")
    if not zipfile.is_zipfile(p):
        raise CliError(f"{str(p)!r} is not a valid .keras file (a .keras file is a zip archive): the file is corrupt "
                       f"or truncated; save the model again")
    try:
        model = keras.saving.load_model(p, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad archive; all mean the same to the user
        raise CliError(f"cannot load {str(p)!r} as a Keras model: {type(err).__name__}: {err}. The file is "
                       f"corrupt, uses custom layers that are not registered, or needs unsafe deserialization "
                       f"(Lambda layers), which keras-eff refuses") from err
    if not isinstance(model, keras.Model):
        raise CliError(f"{str(p)!r} holds a {type(model).__name__}, not a Keras model")
    return model


def read_tflite(path) -> bytes:
    import tflite_export as te

    p = _existing_file(path, "TFLite file")
    try:
        data = te.read_model(p)
        te.make_interpreter(data, use_xnnpack=False)
    except te.InvalidTFLiteModel as err:
        raise CliError(str(err)) from err
    return data


def _from_npy(p: Path):
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise CliError(f"{str(p)!r} holds Python objects (a pickled array); keras-eff never unpickles data. Save "
                           f"a numeric array instead: np.save(path, np.asarray(x, dtype='float32'))") from err
        raise CliError(f"{str(p)!r} is not a readable .npy/.npz file: {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise CliError(f"{str(p)!r} is not a readable .npy/.npz file (corrupt or truncated): {err}") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise CliError(f"{str(p)!r} holds several arrays ({', '.join(keys) or 'none'}); store the model "
                               f"inputs under the key 'x' (np.savez(path, x=inputs))")
            try:
                return loaded[key]
            except ValueError as err:
                raise CliError(f"array {key!r} in {str(p)!r} holds Python objects (pickled); keras-eff never "
                               f"unpickles data: save a numeric array") from err
    return loaded


def load_samples(spec, model_input_shape, count: int = DEFAULT_REP_SAMPLES, what: str = "representative data",
                 split: str = "train"):
    """Samples for the model's input: ``spec`` is a .npy/.npz path or ``fashion-mnist`` (the built-in images of
    ``split``, 'train' or 'test').

    ``model_input_shape`` is the input shape without the batch axis (None for free axes). Returns float32 (n, ...).
    """
    if count < 1:
        raise CliError(f"the sample count must be at least 1, got {count}")
    shape = tuple(model_input_shape)
    if spec == BUILTIN_DATASET:
        from .datasets import fashion_mnist_float

        if shape != (28, 28, 1):
            raise CliError(f"the built-in dataset holds 28x28x1 images but the model input is {shape}; give "
                           f"{what} as a .npy/.npz file")
        (x_train, _), (x_test, _) = fashion_mnist_float(n_train=count, n_test=count)
        return x_train if split == "train" else x_test
    p = _existing_file(spec, f"{what} file")
    if p.suffix not in (".npy", ".npz"):
        raise CliError(f"{what} must be a .npy or .npz file (or '{BUILTIN_DATASET}'), got {str(p)!r}")
    x = _from_npy(p)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise CliError(f"{what} in {str(p)!r} is of type {x.dtype}; it must be numeric")
    expected = "(n, " + ", ".join("any" if s is None else str(s) for s in shape) + ")"
    if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:])):
        hint = ""
        if x.ndim == len(shape) and shape[-1] == 1 and tuple(x.shape[1:]) == tuple(shape[:-1]):
            hint = " (add the channel axis: x[..., None])"
        raise CliError(f"{what} in {str(p)!r} has shape {x.shape}, but the model expects {expected}{hint}")
    if len(x) == 0:
        raise CliError(f"{what} in {str(p)!r} holds no samples")
    x = x[:count].astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise CliError(f"{what} in {str(p)!r} holds NaN or infinite values")
    return x


def positive_int(v):
    """An argparse type: an integer of 1 or more."""
    import argparse

    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return n
