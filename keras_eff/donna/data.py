"""The pipeline's data: Fashion-MNIST (the default), a ``.npz`` file of arrays, or a folder of images.

- ``.npz``: the arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``; images ``(n, h, w, c)`` of a numeric dtype
  (``uint8`` or float, passed to the model as float32 values unchanged: scale them as the reference expects), labels
  ``(n,)`` integer class indices. Read with ``allow_pickle=False``.
- a folder: one sub-folder per class (``keras.utils.image_dataset_from_directory``), either under ``train/`` and
  ``val/`` or split here by ``val_split``; images are resized to ``image_size`` (the model's input size unless given)
  and kept as float32 pixel values 0..255.

Every check names the array or the field that is wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..datasets import fashion_mnist_float
from .checks import as_float, as_int, check_mapping

DATA_KEYS = ("path", "image_size", "val_split", "n_train", "n_test")
NPZ_ARRAYS = ("x_train", "y_train", "x_val", "y_val")


def check_data_section(data) -> dict:
    """The ``data`` section with every field checked by name (no file is read here)."""
    data = check_mapping(data if data is not None else {}, "data", DATA_KEYS)
    out: dict[str, Any] = {}
    for k in ("n_train", "n_test"):
        if data.get(k) is not None:
            out[k] = as_int(f"data.{k}", data[k], 1)
    if data.get("path") is not None:
        if not isinstance(data["path"], str) or not data["path"]:
            raise ValueError(f"data.path: {data['path']!r} must be a file or folder name (a string)")
        out["path"] = data["path"]
    if data.get("image_size") is not None:
        size = data["image_size"]
        size = [size, size] if isinstance(size, (int, float)) and not isinstance(size, bool) else size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ValueError(f"data.image_size: {data['image_size']!r} must be a size or [height, width]")
        out["image_size"] = [as_int("data.image_size", s, 1) for s in size]
    if data.get("val_split") is not None:
        v = as_float("data.val_split", data["val_split"])
        if not 0 < v < 1:
            raise ValueError(f"data.val_split: {v} must lie strictly between 0 and 1")
        out["val_split"] = v
    if "path" not in out:
        extra = [k for k in ("image_size", "val_split") if k in out]
        if extra:
            raise ValueError(
                f"data.{extra[0]}: only applies to data.path (an image folder); Fashion-MNIST is "
                f"the data without a path"
            )
    return out


def _labels(name, y, n_images):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{name}: labels must be class indices of shape (n,), got shape {y.shape} (one-hot labels: "
            f"take argmax first)"
        )
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integer class indices, got dtype {y.dtype}")
    if len(y) != n_images:
        raise ValueError(f"{name}: {len(y)} labels for {n_images} images")
    return y.astype(np.int32)


def load_npz(path, n_train=None, n_test=None) -> tuple:
    """``((x_train, y_train), (x_val, y_val))`` from a ``.npz`` file, checked array by array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"data.path: {path} is not a .npz file (numpy.savez writes one with the arrays {', '.join(NPZ_ARRAYS)})"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_ARRAYS if k not in npz.files]
            if missing:
                raise ValueError(
                    f"data.path: {path} lacks the array(s) {', '.join(missing)} (it holds "
                    f"{', '.join(npz.files) or 'nothing'}); save x_train, y_train, x_val, y_val"
                )
            arrays = {k: npz[k] for k in NPZ_ARRAYS}
    except ValueError as err:
        if "lacks the array" in str(err):
            raise
        raise ValueError(f"data.path: {path}: {err} (object arrays are refused: save numeric arrays)") from None
    out = []
    for split, limit in (("train", n_train), ("val", n_test)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4:
            raise ValueError(f"x_{split}: images must be (n, height, width, channels), got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) or x.dtype == bool:
            raise ValueError(f"x_{split}: images must be numeric (uint8 or float), got dtype {x.dtype}")
        if len(x) == 0:
            raise ValueError(f"x_{split}: no images")
        y = _labels(f"y_{split}", y, len(x))
        if limit is not None:
            x, y = x[:limit], y[:limit]
        out.append((x.astype(np.float32), y))
    return tuple(out)


def _folder_arrays(ds) -> tuple:
    xs, ys = [], []
    for xb, yb in ds:
        xs.append(np.asarray(xb, np.float32))
        ys.append(np.asarray(yb, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def load_image_folder(
    path, image_size, channels: int = 3, val_split=None, seed: int = 0, n_train=None, n_test=None
) -> tuple:
    """``((x_train, y_train), (x_val, y_val))`` from a folder of class sub-folders (or ``train/`` and ``val/``)."""
    path = Path(path)
    color = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if color is None:
        raise ValueError(
            f"data.path: images for a model with {channels} input channels cannot be read from a folder "
            f"(1, 3 or 4 channels)"
        )
    opts = dict(
        image_size=tuple(image_size),
        color_mode=color,
        batch_size=256,
        shuffle=True,
        seed=seed,
        label_mode="int",
        verbose=False,
    )
    train_dir, val_dir = path / "train", path / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        tr = keras.utils.image_dataset_from_directory(train_dir, **opts)
        va = keras.utils.image_dataset_from_directory(val_dir, **opts)
        if list(tr.class_names) != list(va.class_names):
            raise ValueError(
                f"data.path: {train_dir} and {val_dir} hold different classes ({tr.class_names} vs {va.class_names})"
            )
    else:
        split = 0.2 if val_split is None else val_split
        tr, va = keras.utils.image_dataset_from_directory(path, validation_split=split, subset="both", **opts)
    (x, y), (xv, yv) = _folder_arrays(tr), _folder_arrays(va)
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    if n_test is not None:
        xv, yv = xv[:n_test], yv[:n_test]
    return (x, y), (xv, yv)


def load_data(section: dict, input_shape, seed: int = 0) -> tuple:
    """The data the ``data`` section names, checked against the model's ``input_shape``."""
    section = check_data_section(section)
    path = section.get("path")
    if path is None:
        if tuple(input_shape) != (28, 28, 1):
            raise ValueError(
                f"data: the model takes {tuple(input_shape)} images; the built-in data is Fashion-MNIST "
                f"(28, 28, 1): give data.path (a .npz file with x_train, y_train, x_val, y_val, or a "
                f"folder of images), e.g. --data data.npz"
            )
        return fashion_mnist_float(n_train=section.get("n_train"), n_test=section.get("n_test"))
    p = Path(path)
    if p.is_dir():
        size = section.get("image_size") or list(input_shape[:2])
        data = load_image_folder(
            p, size, input_shape[2], section.get("val_split"), seed, section.get("n_train"), section.get("n_test")
        )
    elif p.suffix == ".npz" or p.is_file():
        if "image_size" in section or "val_split" in section:
            raise ValueError(
                "data.image_size / data.val_split apply to an image folder, not to a .npz file (resize "
                "the arrays yourself)"
            )
        data = load_npz(p, section.get("n_train"), section.get("n_test"))
    else:
        raise FileNotFoundError(f"data.path: {p} does not exist (a .npz file or a folder of images)")
    for split, (x, _) in zip(("train", "val"), data):
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise ValueError(
                f"x_{split}: images of shape {tuple(x.shape[1:])}, but the model takes "
                f"{tuple(input_shape)}" + (" (set data.image_size)" if p.is_dir() else "")
            )
    return data
