"""Unstructured pruning: wrapper, prune_model, callbacks, strip, report, .keras round trip and int8 export."""

import os
import warnings

import keras
import numpy as np
import pytest
from keras import layers

from keras_eff.errors import UnsupportedModelError
from keras_eff.models import compile_classifier
from keras_eff.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    PruneWrapper,
    PruningSummary,
    UpdatePruning,
    prune,
    prune_model,
    sparsity_report,
    strip,
)


def tiny_cnn(name="tiny"):
    inputs = keras.Input((8, 8, 4), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv0")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    x = layers.MaxPooling2D(name="pool0")(x)
    x = layers.Conv2D(16, 3, padding="same", name="conv1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.random((64, 8, 8, 4), dtype=np.float32)
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) * 8).astype(np.int32) % 4
    return x, y


def _wrappers(model):
    return {w.layer.name: w for w in model.layers if isinstance(w, PruneWrapper)}


class _Snapshots(keras.callbacks.Callback):
    """Masks after every batch (recorded after UpdatePruning ran for that batch)."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def on_train_batch_begin(self, batch, logs=None):
        self.masks.append({name: np.asarray(w.masks[0]).copy() for name, w in _wrappers(self.model).items()})


def test_masks_change_only_at_update_steps_and_end_step_off_the_grid(data):
    x, y = data
    keras.utils.set_random_seed(0)
    # 8 steps an epoch, frequency 100: only steps 0 and end_step 11 update (TF-MOT would stay at 0% sparsity)
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=11, frequency=100)
    pruned = compile_classifier(prune_model(tiny_cnn(), schedule, min_weights=0))
    snaps = _Snapshots()
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdatePruning(), snaps])
    assert len(snaps.masks) == 16
    for t in range(1, 16):
        changed = any(not np.array_equal(snaps.masks[t][n], snaps.masks[t - 1][n]) for n in snaps.masks[t])
        assert changed == (t == 11), t
    for name, w in _wrappers(pruned).items():
        assert int(w.pruning_step.numpy()) == 16
        mask = np.asarray(w.masks[0])
        assert (mask == 0).mean() == pytest.approx(0.75, abs=0.5 / mask.size), name
    report = sparsity_report(pruned)
    assert report.pruned_sparsity == pytest.approx(0.75, abs=0.01)
    assert {r["layer"] for r in report.rows if r["status"] == "pruned"} == {"conv0", "conv1", "logits"}


def test_pruned_weights_stay_zero_and_drift_never_leaks(data):
    x, y = data
    keras.utils.set_random_seed(1)
    model = tiny_cnn()
    before = [w.copy() for w in model.get_weights()]
    pruned = compile_classifier(prune_model(model, ConstantSparsity(0.5, begin_step=0, frequency=3), min_weights=0))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    for a, b in zip(before, model.get_weights()):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)
    w = _wrappers(pruned)["conv1"]
    mask = np.asarray(w.masks[0])
    kernel = w.layer.kernel
    out = np.asarray(pruned(x[:8]))
    # an optimizer pushing pruned weights (momentum, weight decay) changes nothing the model computes
    drifted = np.asarray(kernel) + (mask == 0) * 5.0
    kernel.assign(drifted)
    np.testing.assert_allclose(np.asarray(pruned(x[:8])), out, rtol=1e-5, atol=1e-6)
    # the next update wipes the drift before choosing the mask, so the pruned weights stay pruned at zero
    w.update_masks(0.5)
    np.testing.assert_array_equal(np.asarray(w.masks[0]), mask)
    assert np.all(np.asarray(kernel)[mask == 0] == 0)
    stripped = strip(pruned)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    np.testing.assert_allclose(np.asarray(stripped(x[:8])), out, rtol=1e-5, atol=1e-6)
    assert (np.asarray(stripped.get_layer("conv1").kernel) == 0).sum() == (mask == 0).sum()
    # sparsity only grows: a later, higher target keeps every weight pruned before
    w.update_masks(0.8)
    assert np.all(np.asarray(w.masks[0])[mask == 0] == 0)


def test_fit_without_update_pruning_is_a_clear_error(data):
    x, y = data
    pruned = compile_classifier(prune_model(tiny_cnn(), 0.5, min_weights=0))
    with pytest.raises(Exception, match="UpdatePruning"):
        pruned.fit(x, y, batch_size=32, epochs=1, verbose=0)
    pruned.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[UpdatePruning()])  # and then it works
    pruned.evaluate(x, y, verbose=0)  # inference needs no callback


def test_keras_round_trip_without_custom_objects_and_resume(tmp_path, data):
    x, y = data
    keras.utils.set_random_seed(2)
    schedule = PolynomialDecay(0.0, 0.6, begin_step=0, end_step=12, frequency=4)
    pruned = compile_classifier(prune_model(tiny_cnn(), schedule, distribution="log", min_weights=0))
    with pytest.warns(UserWarning, match="training stopped at step 8, before the pruning schedule's end_step"):
        pruned.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), rtol=1e-5, atol=1e-6)
    for name, w in _wrappers(pruned).items():
        v = _wrappers(loaded)[name]
        assert v.schedule == w.schedule
        np.testing.assert_array_equal(np.asarray(v.masks[0]), np.asarray(w.masks[0]))
        assert int(v.pruning_step.numpy()) == 8
    # training the loaded model resumes the schedule at step 8 and reaches its end
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    assert sparsity_report(loaded).pruned_sparsity == pytest.approx(0.6, abs=0.01)


def test_summary_callback_records_history_and_tensorboard(tmp_path, data):
    x, y = data
    pruned = compile_classifier(prune_model(tiny_cnn(), PolynomialDecay(0.0, 0.5, 0, 8, frequency=2), min_weights=0))
    history = pruned.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[UpdatePruning(), PruningSummary(log_dir=str(tmp_path / "tb"))],
    )
    h = history.history
    assert h["sparsity/conv1"][0] < 0.5 and h["sparsity/conv1"][1] == pytest.approx(0.5, abs=0.01)
    assert h["sparsity/total"][1] == pytest.approx(0.5, abs=0.01)
    import tensorflow as tf

    files = [f for f in os.listdir(tmp_path / "tb") if f.startswith("events.out.tfevents")]
    tags = {
        v.tag
        for f in files
        for e in tf.compat.v1.train.summary_iterator(str(tmp_path / "tb" / f))
        for v in e.summary.value
    }
    assert {"sparsity/conv1", "sparsity/total"} <= tags


def test_zeros_stay_zero_in_the_int8_tflite_file(data):
    from tflite_export import make_interpreter, read_graph, to_tflite

    x, _ = data
    pruned = prune_model(tiny_cnn(), 0.7, min_weights=0)
    callback = UpdatePruning()
    callback.set_model(pruned)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)  # step 0: masks set at 70%
    stripped = strip(pruned)
    data_bytes = to_tflite(stripped, representative_data=x)
    graph = read_graph(data_bytes)
    interpreter = make_interpreter(data_bytes, use_xnnpack=False)
    constants = [
        interpreter.get_tensor(i)
        for i, t in graph.tensors.items()
        if t.is_constant and t.dtype == np.int8 and len(t.shape) >= 2
    ]
    for name in ("conv0", "conv1", "logits"):
        kernel = np.asarray(stripped.get_layer(name).kernel)
        zeros = kernel == 0
        assert zeros.mean() == pytest.approx(0.7, abs=0.02)
        # TFLite keeps conv kernels as (out, h, w, in) and dense kernels as (out, in)
        expected = np.moveaxis(zeros, -1, 0)
        matches = [c for c in constants if c.shape == expected.shape and np.all(c[expected] == 0)]
        assert matches, f"no int8 weight tensor of {name} keeps its zeros"
        assert (matches[0] == 0).sum() >= zeros.sum()


def test_prune_decorator_in_a_sequential_model_and_strip(data):
    x, y = data
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            prune(layers.Conv2D(4, 3, name="c"), 0.5),
            layers.Flatten(),
            prune(layers.Dense(2, name="d"), ConstantSparsity(0.9, 0)),
        ]
    )
    compile_classifier(model).fit(x, y % 2, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    stripped = strip(model)
    assert [type(layer).__name__ for layer in stripped.layers if not isinstance(layer, layers.InputLayer)] == [
        "Conv2D",
        "Flatten",
        "Dense",
    ]
    assert (np.asarray(stripped.get_layer("d").kernel) == 0).mean() == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(np.asarray(stripped(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="layer 'relu0' \\(ReLU\\) has no kernel"):
        prune(model.get_layer("relu0"))
    with pytest.raises(ValueError, match="layer 'relu0' \\(ReLU\\) has no kernel"):
        prune_model(model, distribution={"relu0": 0.5})
    with pytest.raises(ValueError, match="layer 'nope'.*its layers are:.*conv0"):
        prune_model(model, distribution={"nope": 0.5})
    with pytest.raises(ValueError, match="sparsity for layer 'conv1' must lie in \\[0, 1\\), got 1.0"):
        prune_model(model, distribution={"conv1": 1.0})
    with pytest.raises(ValueError, match="sparsity for layer 'conv1'.*-0.1"):
        prune_model(model, distribution={"conv1": -0.1})
    with pytest.raises(ValueError, match="unknown distribution 'cubic'"):
        prune_model(model, 0.5, distribution="cubic")
    with pytest.raises(ValueError, match="target_sparsity must lie in \\[0, 1\\)"):
        prune_model(model, 1.0)
    with pytest.raises(ValueError, match="needs a schedule"):
        prune_model(model)
    with pytest.raises(ValueError, match="skip names layer 'conv9'"):
        prune_model(model, 0.5, skip=["conv9"])
    with pytest.raises(ValueError, match="unknown pruning structure '3x3'"):
        prune_model(model, 0.5, structure="3x3")
    with pytest.raises(ValueError, match="layer 'conv0' has 4 input channels.*not a multiple of 8"):
        prune_model(model, distribution={"conv0": 0.5}, structure="4:8")
    with pytest.raises(ValueError, match="no layer of model 'tiny' can be pruned"):
        prune_model(model, 0.5, min_weights=10**9)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(UnsupportedModelError, match="subclassed.*keras_eff.prune"):
        prune_model(sub, 0.5)


def test_small_and_depthwise_layers_left_dense_and_reported():
    from keras_eff.models import ds_cnn

    pruned = prune_model(ds_cnn(width=16), 0.5)
    report = sparsity_report(pruned)
    status = {r["layer"]: r["status"] for r in report.rows}
    # read from the model (so a saved and loaded model says the same): which selection rules can have left it out
    assert status["stem"] == "dense: not selected (144 weights; below min_weights or named in skip)"
    assert status["dw0"].startswith("dense: not selected (") and "a depthwise kernel (skip_depthwise)" in status["dw0"]
    assert status["pw1"] == "pruned"
    assert "stem" in str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strip(pruned)


def test_steps_per_execution_catches_up_on_updates(data):
    x, y = data
    pruned = prune_model(tiny_cnn(), PolynomialDecay(0.0, 0.75, 0, end_step=11, frequency=100), min_weights=0)
    pruned.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4
    )
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdatePruning()])  # 16 steps, executions of 4
    assert all(int(w.pruning_step.numpy()) == 16 for w in _wrappers(pruned).values())
    assert sparsity_report(pruned).pruned_sparsity == pytest.approx(0.75, abs=0.01)  # step 11 caught up at 12
