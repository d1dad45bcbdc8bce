"""One worker of tests/test_multiworker.py: QAT and pruning under ``tf.distribute.MultiWorkerMirroredStrategy``.

Run as ``python tests/_multiworker_worker.py OUT_DIR`` with ``TF_CONFIG`` set (one CPU device per worker, so each
worker holds one replica of the two). It trains the two scenarios below inside the strategy's scope and writes, for
each, every variable of the model and of its optimizer to ``OUT_DIR/<scenario>_worker<i>.npz`` and a summary to
``OUT_DIR/worker<i>.json``. The test imports the same functions and runs them without a strategy (single process, the
same global batch) as the reference.

Tiny model, tiny data, few steps: the point is the state's synchronization, not accuracy.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

GLOBAL_BATCH = 16
STEPS = 4


def data():
    rng = np.random.default_rng(0)
    return rng.random((GLOBAL_BATCH * STEPS, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, GLOBAL_BATCH * STEPS)


def float_model(synchronized=False):
    """A tiny CNN with a BatchNorm (folded by quantize_model; Keras's own, synchronized, under pruning) and weights
    drawn with numpy, so that every process, whatever Keras's seed state, starts from the same ones."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
    h = layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name="bn")(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(h))
    rng = np.random.default_rng(1)
    weights = []
    for w in model.get_weights():
        if w.ndim > 1:  # kernels: He-scaled normal
            weights.append((rng.standard_normal(w.shape) * np.sqrt(2.0 / np.prod(w.shape[:-1]))).astype(np.float32))
        else:  # biases, γ/β, moving statistics: Keras's initial values
            weights.append(w)
    model.set_weights(weights)
    return model


def _compile(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _fit(model, callbacks):
    """fit for one epoch of STEPS global batches, then evaluate: {"loss": fit's, "eval_loss": evaluate's}."""
    x, y = data()
    loss = model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=list(callbacks)
    ).history["loss"][0]
    return {"loss": float(loss), "eval_loss": float(model.evaluate(x, y, batch_size=GLOBAL_BATCH, verbose=0))}


def train_qat(scope):
    """quantize_model + calibrate + fit with FreezeBatchNorm (after 2 steps) and FreezeRanges (after 3)."""
    import keras_eff as ke

    x, _ = data()
    with scope():
        qat = ke.quantize_model(float_model())
        ke.calibrate(qat, x[:32], progress=False)
        _compile(qat)
    calibrated = [float(np.asarray(v)) for v in qat.variables if v.path.endswith("range_max")]
    info = _fit(qat, [ke.callbacks.FreezeBatchNorm(step=2), ke.callbacks.FreezeRanges(step=3)])
    return qat, dict(info, calibrated_range_max=calibrated)


def train_pruning(scope):
    """prune_model (50 % over 3 steps) + fit with UpdatePruning."""
    import keras_eff as ke

    with scope():
        pruned = ke.prune_model(
            float_model(synchronized=True),
            ke.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=3, frequency=1),
            min_weights=0,
        )
        _compile(pruned)
    return pruned, _fit(pruned, [ke.callbacks.UpdatePruning()])


SCENARIOS = {"qat": train_qat, "pruning": train_pruning}


def snapshot(model):
    """Every variable of the model, then of its optimizer, in order: {"<index>|<path>": value}."""
    variables = list(model.variables) + list(model.optimizer.variables)
    return {f"{i:03d}|{v.path}": np.asarray(v) for i, v in enumerate(variables)}


def unpatched_fit_error(strategy):
    """What Keras's own fit does under this strategy, before patch_keras_multi_worker_fit: its error's first line, or
    None when it trains (then the patch is no longer needed)."""
    import keras

    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    try:
        model.fit(np.zeros((8, 2), np.float32), np.zeros((8, 1), np.float32), batch_size=4, verbose=0)
    except ValueError as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return None


def main(out_dir):
    import tensorflow as tf

    # The strategy must exist before any other TensorFlow op: it configures collective ops and starts this worker's
    # gRPC server from TF_CONFIG. On CPUs the collectives run as RING (AUTO picks it; NCCL needs GPUs).
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from keras_eff.distribute import patch_keras_multi_worker_fit

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    summary = {
        "task": task,
        "replicas": strategy.num_replicas_in_sync,
        "unpatched_fit_error": unpatched_fit_error(strategy),
        "patched": patch_keras_multi_worker_fit(),
        "info": {},
        "not_distributed": {},
        "aggregation": {},
    }
    for name, train in SCENARIOS.items():
        model, info = train(strategy.scope)
        summary["info"][name] = info
        summary["not_distributed"][name] = [
            v.path for v in model.variables if not isinstance(v.value, tf.distribute.DistributedValues)
        ]
        summary["aggregation"][name] = {
            v.path: v.value.aggregation.name
            for v in model.variables
            if isinstance(v.value, tf.distribute.DistributedValues)
        }
        np.savez(os.path.join(out_dir, f"{name}_worker{task}.npz"), **snapshot(model))
    # A last collective: neither worker leaves (and shuts its server down) while the other may still need it.
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
    path = os.path.join(out_dir, f"worker{task}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: the collective runtime's threads can hold it up
