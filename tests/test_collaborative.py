"""The whole collaborative chain through the public APIs: prune → strip → cluster → strip → QAT → int8 TFLite."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_eff as ke
import tflite_export as te

pytestmark = pytest.mark.slow


def _model():
    inputs = keras.Input((12, 12, 1))
    x = layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, layers.Dense(4, name="fc2")(x))


def _fit(model, x, y, steps, callbacks=()):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=16, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=list(callbacks))


def test_prune_cluster_qat_keeps_zeros_and_clusters_in_int8(rng):
    keras.utils.set_random_seed(0)
    x = rng.random((256, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 4, 256)
    model = _model()
    _fit(model, x, y, 8)

    pruned = ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0, frequency=1), min_weights=0)
    _fit(pruned, x, y, 4, [ke.callbacks.UpdatePruning()])
    sparse = ke.strip(pruned)
    zero_masks = {l.name: l.get_weights()[0] == 0 for l in sparse.layers if l.weights}
    assert all(0.45 <= m.mean() <= 0.55 for m in zero_masks.values()), {k: m.mean() for k, m in zero_masks.items()}

    clustered = ke.cluster_model(sparse, 8, preserve_sparsity=True)
    _fit(clustered, x, y, 4)
    chained = ke.strip(clustered)

    qat = ke.quantize_model(chained, preserve=("sparsity", "clusters"))
    ke.calibrate(qat, x[:128], progress=False)
    _fit(qat, x, y, 4)
    data = te.to_tflite(qat)
    assert te.find_float_islands(data) == []

    graph = te.read_graph(data)
    interpreter = te.make_interpreter(data, use_xnnpack=False)
    kernels = {}
    for op in graph.ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            kernels[op.name + str(op.index)] = interpreter.get_tensor(op.inputs[1])
    assert len(kernels) == 3
    for name, k in kernels.items():
        flat = k.reshape(k.shape[0], -1)  # TFLite keeps the output channel first
        assert 0.45 <= np.mean(flat == 0) <= 0.55, name  # pruned zeros survive clustering, QAT and export
        for channel in flat:  # at most 8 centroids, zero among them, on each channel grid
            assert len(np.unique(channel)) <= 8, name
    report = ke.clustering_report(data)
    assert report.max_distinct_per_channel <= 8


def test_an_export_traces_a_clustered_kernel_as_a_constant_not_a_gather(rng):
    """Held as centroids gathered by indices, a kernel reached the converter as a gather it folds only below its
    constant-folding limit: VGG16's 4096 × 4096 fc2 was left a FakeQuant on a gather, and the conversion failed.
    Under the export protocol the gathered kernel is computed before the trace: no gather in the traced graph, and
    the file is what the simulation computes."""
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    x = rng.random((64, 12, 12, 1), dtype=np.float32)
    plain = ke.strip(ke.cluster_model(_model(), 8))
    qat = ke.quantize_model(plain, preserve="clusters")
    ke.calibrate(qat, x, progress=False)

    def gathers():
        fn = tf.function(lambda t: qat(t, training=False)).get_concrete_function(tf.TensorSpec((1, 12, 12, 1)))
        return [n.op for n in fn.graph.as_graph_def().node if "Gather" in n.op]

    assert gathers()  # the simulation gathers (the centroids train)
    with te.export_view(qat):
        assert gathers() == []
    assert gathers()  # and again after the export
    data = te.to_tflite(qat)
    assert te.compare(qat, data, x).max_lsb_diff == 0
