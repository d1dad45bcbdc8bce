"""Built-in datasets, read from files on this machine (nothing is downloaded).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, which installs the four original IDX files in
``/usr/share/datasets/fashion-mnist/``. Set ``KERAS_EFF_FASHION_MNIST_DIR`` to read them from another folder.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "KERAS_EFF_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_IDX_UBYTE = 0x08


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Reads one gzip-compressed IDX file of unsigned bytes."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable gzip IDX file ({err}); reinstall dataset-fashion-mnist") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    if ndim != expected_ndim:
        raise ValueError(f"{path} holds {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=header)
    if payload.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {payload.size} values")
    return payload.reshape(shape)


def fashion_mnist(data_dir: str | os.PathLike | None = None):
    """Loads Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images are ``uint8`` arrays of shape ``(n, 28, 28)``; labels are ``uint8`` in ``0..9`` (names in
    ``FASHION_MNIST_CLASSES``). The folder is ``data_dir``, else ``$KERAS_EFF_FASHION_MNIST_DIR``, else Debian's.
    """
    folder = Path(data_dir or os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_DIR)
    missing = [name for name in _FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing in {folder}: {', '.join(missing)}. Install them with "
            f"`apt-get install dataset-fashion-mnist` (Debian), or point {FASHION_MNIST_ENV} at a folder holding "
            f"the four original .gz IDX files."
        )
    arrays = {key: _read_idx(folder / name, 3 if key.startswith("x") else 1) for key, name in _FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise ValueError(f"Fashion-MNIST {split} images and labels differ in count in {folder}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def fashion_mnist_float(data_dir=None, n_train: int | None = None, n_test: int | None = None):
    """Fashion-MNIST scaled to ``[0, 1]`` float32 with a channel axis, ``(n, 28, 28, 1)``, optionally sliced."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist(data_dir)
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    scale = np.float32(1.0 / 255.0)
    return ((x_train[..., None] * scale, y_train.astype(np.int32)),
            (x_test[..., None] * scale, y_test.astype(np.int32)))
