"""Built-in datasets, read from files on this machine (nothing is downloaded).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package, which installs the four original IDX files in
``/usr/share/datasets/fashion-mnist/``. Set ``KERAS_EFF_FASHION_MNIST_DIR`` to read them from another folder.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "fashion_mnist",
    "fashion_mnist_float",
]

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "KERAS_EFF_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
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
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=header)
    if payload.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {payload.size} values")
    return payload.reshape(shape)


def fashion_mnist(data_dir: str | os.PathLike | None = None):
    """Loads Fashion-MNIST from the four original gzip IDX files on this machine; nothing is downloaded.

    Args:
        data_dir: The folder holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
            ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``. Default: ``$KERAS_EFF_FASHION_MNIST_DIR``
            when set, else ``DEFAULT_FASHION_MNIST_DIR`` (where Debian's ``dataset-fashion-mnist`` installs them).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: images as ``uint8`` arrays of shape ``(n, 28, 28)`` (60,000 and
        10,000), labels as ``uint8`` arrays of shape ``(n,)`` in ``0..9`` (names in ``FASHION_MNIST_CLASSES``).

    Raises:
        FileNotFoundError: If any of the four files is missing from the folder.
        ValueError: If a file is not a readable gzip IDX file of unsigned bytes, is truncated, or images and labels
            differ in count.

    Example:
        ```python
        (x_train, y_train), (x_test, y_test) = keras_eff.datasets.fashion_mnist()
        print(FASHION_MNIST_CLASSES[y_train[0]])
        ```
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
    """Loads Fashion-MNIST ready for a Keras model: float32 images in ``[0, 1]`` with a channel axis.

    Args:
        data_dir: The folder holding the four IDX files, as in `fashion_mnist` (default: the environment variable,
            else Debian's folder).
        n_train: Keep only the first ``n_train`` training images and labels; ``None`` keeps all 60,000.
        n_test: Keep only the first ``n_test`` test images and labels; ``None`` keeps all 10,000.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: images as ``float32`` arrays of shape ``(n, 28, 28, 1)`` scaled by
        1/255, labels as ``int32`` arrays of shape ``(n,)``.

    Raises:
        FileNotFoundError: If any of the four files is missing.
        ValueError: If a file is damaged (see `fashion_mnist`).

    Example:
        ```python
        (x_train, y_train), (x_test, y_test) = fashion_mnist_float(n_train=6000, n_test=2000)
        model.fit(x_train, y_train, epochs=1)
        ```
    """
    (x_train, y_train), (x_test, y_test) = fashion_mnist(data_dir)
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    scale = np.float32(1.0 / 255.0)
    return (
        (x_train[..., None] * scale, y_train.astype(np.int32)),
        (x_test[..., None] * scale, y_test.astype(np.int32)),
    )
