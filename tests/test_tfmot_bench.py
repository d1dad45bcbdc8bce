"""The keras-eff vs TF-MOT benchmark's shared parts, in Keras 3 only (TF-MOT needs its own environment, not run here):
the one-description builder, weights by layer name, the data order, the job and result files."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from benchmarks import tfmot_common as common
from keras_eff.models import ds_cnn, small_cnn

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("spec_fn, reference", [(common.small_cnn_spec, small_cnn), (common.ds_cnn_spec, ds_cnn)])
def test_description_builds_the_reference_model_and_takes_its_weights(spec_fn, reference, tmp_path, rng):
    keras.utils.set_random_seed(0)
    ref = reference(width=4)
    # BatchNorm statistics away from 0/1, so that a swapped mean and variance would show
    for layer in ref.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g * 1.5, b + 0.1, m + rng.normal(0, 0.2, m.shape), v * 2.0])
    built = common.build(spec_fn(width=4), keras)
    assert built.count_params() == ref.count_params()
    path = tmp_path / "w.npz"
    common.save_weights(ref, path)
    common.load_weights(built, path)
    x = rng.random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(built.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    again = common.build(spec_fn(width=4), keras)
    common.load_weights(again, path)  # a second build from the same description: same outputs
    np.testing.assert_array_equal(again.predict(x, verbose=0), built.predict(x, verbose=0))


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    common.save_weights(common.build(common.small_cnn_spec(width=4), keras), path)
    with pytest.raises(ValueError, match="no weights for layer 'stem'"):
        common.load_weights(common.build(common.ds_cnn_spec(width=4), keras), path)
    with pytest.raises(ValueError, match="shape|Shape|incompatible|expected"):
        common.load_weights(common.build(common.small_cnn_spec(width=8), keras), path)


def test_unknown_layer_kind_is_named():
    spec = {"name": "bad", "input_shape": [8, 8, 1], "layers": [{"kind": "lstm", "name": "rnn"}]}
    with pytest.raises(ValueError, match="'rnn': unknown kind 'lstm'"):
        common.build(spec, keras)


def test_data_order_and_job_round_trip(tmp_path, rng):
    x = rng.random((10, 28, 28, 1), dtype=np.float32)
    y = np.arange(10, dtype=np.int32)
    orders = {3: np.stack([rng.permutation(10) for _ in range(3)])}
    common.write_data(tmp_path / "d.npz", x, y, x[:4], y[:4], orders)
    data = common.read_data(tmp_path / "d.npz", 3)
    xs, ys = common.epochs_of(data, 1, 2)
    np.testing.assert_array_equal(ys, np.concatenate([orders[3][1], orders[3][2]]))
    np.testing.assert_array_equal(xs, x[ys])
    with pytest.raises(ValueError, match="orders 3 epochs"):
        common.epochs_of(data, 2, 2)

    job = {
        "framework": "tfmot",
        "seed": 3,
        "arch": common.small_cnn_spec(4),
        "techniques": ["float", "pqat"],
        "hparams": {"batch_size": 64},
        "data": str(tmp_path / "d.npz"),
        "weights": "w.npz",
        "out_dir": "out",
    }
    common.write_json(tmp_path / "job.json", job)
    assert common.read_job(tmp_path / "job.json") == json.loads(json.dumps(job))
    del job["weights"]
    common.write_json(tmp_path / "bad.json", job)
    with pytest.raises(ValueError, match="lacks weights"):
        common.read_job(tmp_path / "bad.json")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("n_train, tune_epochs", [(6000, 2), (1024, 1), (4000, 3), (100, 1)])
def test_pruning_end_step_is_on_tfmots_update_grid(n_train, tune_epochs):
    hp = {"batch_size": 64, "tune_epochs": tune_epochs}
    end_step, frequency = common.pruning_steps(hp, n_train)
    total = common.steps_per_epoch(hp, n_train) * tune_epochs
    assert end_step % frequency == 0  # TF-MOT updates masks only on multiples of frequency
    assert 0 < end_step < total or total == 1


def test_tfmot_side_imports_no_keras_eff():
    for name in ("tfmot_worker.py", "tfmot_common.py"):
        tree = ast.parse((BENCH / name).read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        # the shared file helpers (tflite_export.files) are the one exception: they import no Keras (checked below)
        imported = [m for m in imported if m not in ("tflite_export.files",)]
        assert not [m for m in imported if m.split(".")[0] in ("keras_eff", "tflite_export", "keras")], name
    code = (
        "import sys; import benchmarks.tfmot_common; "
        "print(sorted(m for m in ('keras', 'tensorflow', 'keras_eff', 'tf_keras') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH.parent,
        env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_tfmot_requirements_are_pinned():
    lines = [l for l in (BENCH / "requirements-tfmot.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert all("==" in l for l in lines), lines
    pins = {name.lower().replace("_", "-"): v for name, v in (l.split("==") for l in lines)}
    assert pins["tensorflow-model-optimization"] == "0.8.1"
    assert pins["tf-keras"] == pins["tensorflow"] == "2.21.0"
