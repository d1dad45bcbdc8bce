"""Data in any usual form (arrays, (x, y), tf.data, PyDataset, generators) for calibrate and every API that takes
samples, through one normaliser; counts checked (issue 21: D9 calibrate, D10a)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_eff as ke
from keras_eff import ptq


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1), name="image")
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    out = layers.Dense(3, name="logits")(layers.Flatten(name="flat")(x))
    return keras.Model(inp, out, name="tiny")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (40, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 40)


def _ranges(q):
    out = {}
    for a in ke.quantization.activation_quantizers(q):
        out[a.name + "/min"], out[a.name + "/max"] = float(a.range_min.numpy()), float(a.range_max.numpy())
    return out


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch))

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]


def _kinds(x, y):
    return {
        "(x, y) tuple": lambda: (x, y),
        "tensor": lambda: tf.constant(x),
        "dataset (x, y) batched": lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(7),
        "dataset x unbatched": lambda: tf.data.Dataset.from_tensor_slices(x),
        "dataset x batched": lambda: tf.data.Dataset.from_tensor_slices(x).batch(16),
        "generator of (x, y) batches": lambda: ((x[i : i + 8], y[i : i + 8]) for i in range(0, len(x), 8)),
        "iterator of x batches": lambda: iter([x[i : i + 10] for i in range(0, len(x), 10)]),
        "PyDataset": lambda: _Batches(x, y, 9),
    }


def _calibrated(model, data, **kwargs):
    q = ke.quantize_model(model)
    ke.calibrate(q, data, progress=False, **kwargs)
    return q


def test_calibrate_takes_datasets_generators_and_pydatasets(model, xy):
    x, y = xy
    want = _ranges(_calibrated(model, x))
    for kind, make in _kinds(x, y).items():
        got = _ranges(_calibrated(model, make()))
        assert got == pytest.approx(want), kind


def test_calibrate_reads_no_more_than_max_samples_of_an_endless_source(model, xy):
    x, _ = xy
    want = _ranges(_calibrated(model, x[:16]))
    endless = tf.data.Dataset.from_tensor_slices(x[:16]).repeat()
    got = _ranges(_calibrated(model, endless, max_samples=16))
    assert got == pytest.approx(want)
    pulled = []

    def gen():
        while True:
            pulled.append(1)
            yield x[:4]

    ke.calibrate(ke.quantize_model(model), gen(), max_samples=8, progress=False)
    assert len(pulled) == 2


@pytest.mark.parametrize("bad", ["images.npy", {"image": 1}, object(), lambda: None])
def test_wrong_data_type_names_the_accepted_ones(model, bad):
    q = ke.quantize_model(model)
    with pytest.raises(TypeError, match=r"tf\.data\.Dataset.*PyDataset.*generator"):
        ke.calibrate(q, bad, progress=False)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"max_samples": 0}, "max_samples"),
        ({"max_samples": -5}, "max_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -1}, "batch_size"),
    ],
)
def test_calibrate_checks_its_counts(model, xy, kwargs, name):
    q = ke.quantize_model(model)
    with pytest.raises(ValueError, match=rf"{name}=-?\d+ is out of range: it must be a whole number of at least 1"):
        ke.calibrate(q, xy[0], progress=False, **kwargs)
    with pytest.raises(TypeError, match=name):
        ke.calibrate(q, xy[0], progress=False, **{name: "8"})


def test_ptq_mixed_precision_and_compression_share_the_normaliser(model, xy):
    x, y = xy
    kinds = _kinds(x, y)
    base = _calibrated(ptq.equalize(model), x)
    ref = ptq.bias_correction(_calibrated(ptq.equalize(model), x), x)
    for kind in ("dataset (x, y) batched", "PyDataset", "generator of (x, y) batches"):
        q = ptq.bias_correction(_calibrated(ptq.equalize(model), x), kinds[kind]())
        for a, b in zip(q.get_weights(), ref.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=kind)
    rounded = ptq.adaround(base, kinds["dataset x unbatched"](), iterations=2, batch_size=8)
    assert set(ke.get_report(rounded, "adaround").layers) == {"conv", "logits"}
    sens = ke.quantization.layer_sensitivity(
        model, kinds["iterator of x batches"](), lambda m: 0.0, candidate_bits=(4,)
    )
    assert set(sens) == {"conv", "logits"}
    from keras_eff.compression.inputs import sample_array

    np.testing.assert_array_equal(sample_array(model, kinds["PyDataset"](), 12), x[:12])
    with pytest.raises(TypeError, match="PyDataset"):
        ptq.adaround(base, "x.npy", iterations=1)
