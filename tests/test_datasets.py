import gzip

import numpy as np
import pytest

from keras_eff.datasets import FASHION_MNIST_ENV, fashion_mnist, fashion_mnist_float


def test_fashion_mnist_shapes_dtypes_and_labels():
    (x_train, y_train), (x_test, y_test) = fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    # ten balanced classes, as in the original release
    assert np.array_equal(np.bincount(y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(y_test), np.full(10, 1000))
    assert x_train.max() == 255 and x_train.min() == 0


def test_float_view_is_scaled_and_sliced():
    (x, y), (xt, yt) = fashion_mnist_float(n_train=100, n_test=50)
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert xt.shape == (50, 28, 28, 1) and y.dtype == np.int32


def test_missing_files_name_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist()


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_dataset(folder, n_train=5, n_test=3):
    _write_idx(folder / "train-images-idx3-ubyte.gz", np.arange(n_train * 784).reshape(n_train, 28, 28) % 256)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((n_test, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_folder_from_environment(tmp_path, monkeypatch):
    _fake_dataset(tmp_path)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    (x, y), (xt, yt) = fashion_mnist()
    assert x.shape == (5, 28, 28) and list(y) == [0, 1, 2, 3, 4] and xt.shape == (3, 28, 28)
    assert x[0, 0, 5] == 5


def test_truncated_and_corrupt_files_are_reported(tmp_path):
    _fake_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist(tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable gzip"):
        fashion_mnist(tmp_path)
