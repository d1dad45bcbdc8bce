"""tf.distribute.MirroredStrategy on 2 logical CPU devices: QAT, pruning, clustering and prune/cluster-preserving QAT
train with every variable identical on both replicas, each piece of state has the aggregation it needs, and the result
equals single-device training on the same global batch (docs/distributed.md).

Logical devices must be configured before TensorFlow initializes its devices, which the other test modules of a
session have done long before this one runs. So in a normal session this module holds one test that runs the module
again in a child process (``KERAS_EFF_DISTRIBUTED_CHILD=1``), where the devices are configured at import and the real
tests below run; the child's report is shown when it fails. Run the child directly with
``KERAS_EFF_DISTRIBUTED_CHILD=1 python -m pytest tests/test_distribute.py``.
"""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

CHILD = os.environ.get("KERAS_EFF_DISTRIBUTED_CHILD") == "1"
REPLICAS = 2

if not CHILD:

    def test_mirrored_strategy_suite_in_own_process():
        env = dict(os.environ, KERAS_EFF_DISTRIBUTED_CHILD="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__]
        done = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-3000:]

else:
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

    import keras
    from keras import layers

    import keras_eff as ke
    import tflite_export as te

    FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA
    NONE = tf.VariableAggregation.NONE

    @pytest.fixture(scope="module")
    def strategy():
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])

    @pytest.fixture(scope="module")
    def data():
        rng = np.random.default_rng(0)
        return rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 64)

    def _float_model(synchronized=False):
        """A tiny CNN. Keras's own BatchNormalization keeps per-replica statistics unless ``synchronized=True`` (its
        moving statistics then drift apart between replicas): pruning and clustering leave it as it is, so their
        tests use the synchronized one; a QuantizeWrapper folding it synchronizes its statistics itself."""
        inputs = keras.Input((8, 8, 1))
        h = layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
        h = layers.BatchNormalization(momentum=0.9, synchronized=synchronized, name="bn")(h)
        h = layers.ReLU(name="relu")(h)
        h = layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
        h = layers.Flatten()(h)
        return keras.Model(inputs, layers.Dense(3, name="fc")(h))

    @pytest.fixture(scope="module")
    def float_weights():
        keras.utils.set_random_seed(0)
        return _float_model().get_weights()

    def _compile(model):
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    def _fit(model, data, steps=4, callbacks=()):
        x, y = data
        return model.fit(
            x[: 16 * steps],
            y[: 16 * steps],
            batch_size=16,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=list(callbacks),
        ).history["loss"][0]

    def _copies(variable):
        """Each replica's copy of a variable, as numpy."""
        inner = variable.value
        assert isinstance(inner, tf.distribute.DistributedValues), f"{variable.path} is not distributed"
        return [np.asarray(v) for v in inner.values]

    def _assert_replicas_identical(model):
        for v in model.variables:
            copies = _copies(v)
            assert len(copies) == REPLICAS
            for c in copies[1:]:
                np.testing.assert_array_equal(c, copies[0], err_msg=f"{v.path} differs between replicas")

    def _assert_matches(distributed, single, atol=1e-5):
        assert len(distributed.variables) == len(single.variables)
        for vd, vs in zip(distributed.variables, single.variables):
            assert vd.path.split("/")[-1] == vs.path.split("/")[-1], (vd.path, vs.path)
            np.testing.assert_allclose(
                _copies(vd)[0], np.asarray(vs), atol=atol, rtol=1e-5, err_msg=f"{vd.path}: distributed vs single device"
            )

    def _aggregation(variable):
        return variable.value.aggregation

    def _by_name(model, suffix):
        found = [v for v in model.variables if v.path.endswith(suffix)]
        assert found, suffix
        return found

    def _both(strategy, make):
        """make(scope) (a context factory) under the 2-replica strategy and without one (one device, same batch)."""
        return make(strategy.scope), make(contextlib.nullcontext)

    # -- QAT ----------------------------------------------------------------------------------------------------

    def test_qat_freeze_callbacks_replicas_identical_and_equal_single_device(strategy, data, float_weights):
        x, _ = data

        def make(scope):
            with scope():
                model = _float_model()
                model.set_weights(float_weights)
                qat = ke.quantize_model(model)
                ke.calibrate(qat, x[:32], progress=False)
                _compile(qat)
            calibrated = float(np.asarray(_by_name(qat, "conv_output_range/range_max")[0]))
            loss = _fit(qat, data, 4, [ke.callbacks.FreezeBatchNorm(step=2), ke.callbacks.FreezeRanges(step=3)])
            return qat, loss, calibrated

        (qd, loss_d, cal_d), (qs, loss_s, cal_s) = _both(strategy, make)
        assert strategy.num_replicas_in_sync == REPLICAS
        _assert_replicas_identical(qd)
        _assert_matches(qd, qs)
        assert loss_d == pytest.approx(loss_s, rel=1e-5)
        # the state did move, and froze: ranges away from calibration, BN statistics updated, flags set everywhere
        assert float(_copies(_by_name(qd, "conv_output_range/range_max")[0])[0]) != pytest.approx(cal_d, abs=1e-7)
        assert cal_d == pytest.approx(cal_s)
        for flag in _by_name(qd, "ranges_frozen") + _by_name(qd, "quant_conv/bn_frozen"):
            assert _copies(flag) == [1.0] * REPLICAS
        for suffix in ("range_min", "range_max", "initialized", "ranges_frozen", "bn_frozen"):
            assert {_aggregation(v) for v in _by_name(qd, suffix)} == {FIRST}, suffix
        for v in qd.trainable_variables:
            assert _aggregation(v) == NONE, v.path  # the optimizer applies the all-reduced gradient
        mean = _by_name(qd, "bn/moving_mean")[0]
        assert np.any(_copies(mean)[0] != 0)  # live-BN steps ran, with the global batch's statistics

        int8 = te.to_tflite(qd)  # export after distributed training
        assert te.find_float_islands(int8) == []
        report = te.compare(qd, int8, x[:32])
        assert report.argmax_agreement == 1.0 and report.max_lsb_diff <= 1

    def test_bn_flag_changed_without_retrace_fails_loudly(strategy, data, float_weights, sneaky_bn_freeze):
        """The live/frozen BatchNorm branch is chosen when the distributed step is traced; a flag set behind fit's
        back (not through FreezeBatchNorm) must stop training, not train the wrong branch."""
        x, _ = data
        with strategy.scope():
            model = _float_model()
            model.set_weights(float_weights)
            qat = ke.quantize_model(model)
            ke.calibrate(qat, x[:32], progress=False)
            _compile(qat)
        with pytest.raises(tf.errors.InvalidArgumentError, match="bn_frozen changed"):
            _fit(qat, data, 3, [sneaky_bn_freeze()])

    # -- scope mismatches (issue #20, bad input) ------------------------------------------------------------------

    def _technique(kind, model, x):
        if kind == "qat":
            qat = ke.quantize_model(model)
            ke.calibrate(qat, x[:32], progress=False)
            return qat, [ke.callbacks.FreezeBatchNorm(step=1), ke.callbacks.FreezeRanges(step=1)]
        pruned = ke.prune_model(model, ke.ConstantSparsity(0.5, begin_step=0, frequency=1), min_weights=0)
        return pruned, [ke.callbacks.UpdatePruning()]

    def _compile_with(model, momentum):
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    @pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["sgd", "momentum"])
    @pytest.mark.parametrize("kind", ["qat", "pruning"])
    def test_made_outside_scope_compiled_inside_fails_clearly(strategy, data, float_weights, kind, momentum):
        """Keras fails here at the first step with a bare AssertionError (an optimizer without slots) or 'Need to be
        inside with strategy.scope()'; keras-eff's callbacks stop it first, saying what to do."""
        model = _float_model()
        model.set_weights(float_weights)
        made, callbacks = _technique(kind, model, data[0])
        with strategy.scope():
            _compile_with(made, momentum)
        with pytest.raises(
            ValueError,
            match=r"mixes tf\.distribute scopes.*outside any.*MirroredStrategy.*"
            r"inside the same `with strategy\.scope\(\):`",
        ):
            _fit(made, data, 2, callbacks)
        assert all(not isinstance(v.value, tf.distribute.DistributedValues) for v in made.variables)

    @pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["sgd", "momentum"])
    def test_made_and_compiled_outside_scope_fit_inside_fails_clearly(strategy, data, float_weights, momentum):
        """Keras: a bare AssertionError, or 'Mixing different tf.distribute.Strategy objects', at the first step."""
        model = _float_model()
        model.set_weights(float_weights)
        qat, callbacks = _technique("qat", model, data[0])
        _compile_with(qat, momentum)
        ke.distribute.check_same_scope(qat)  # consistent in itself: trains outside the scope
        with (
            strategy.scope(),
            pytest.raises(
                ValueError,
                match=r"outside any tf\.distribute scope; and fit is "
                r"called in the scope of a MirroredStrategy",
            ),
        ):
            _fit(qat, data, 2, callbacks)

    @pytest.mark.parametrize("kind", ["qat", "pruning"])
    def test_made_inside_scope_compiled_outside_fails_clearly(strategy, data, float_weights, kind):
        with strategy.scope():
            model = _float_model()
            model.set_weights(float_weights)
            made, callbacks = _technique(kind, model, data[0])
        _compile_with(made, 0.0)  # Keras would train this one; Adam or momentum fail in Keras ("Mixing different ...")
        with pytest.raises(ValueError, match=r"optimizer's variables .*outside any tf\.distribute scope"):
            _fit(made, data, 2, callbacks)

    def test_made_inside_scope_compiled_outside_with_slots_fails_in_keras(strategy, data, float_weights):
        """Keras builds the optimizer of a model made in a scope before any callback runs: its own error stands."""
        with strategy.scope():
            model = _float_model()
            model.set_weights(float_weights)
            qat, callbacks = _technique("qat", model, data[0])
        _compile_with(qat, 0.9)
        with pytest.raises(RuntimeError, match="Mixing different tf.distribute.Strategy objects"):
            _fit(qat, data, 2, callbacks)

    def test_float_model_from_outside_quantized_inside_simply_works(strategy, data, float_weights):
        """quantize_model and prune_model copy every layer that holds variables: a float model made (or loaded)
        outside the scope gives a model whose variables are all mirrored."""
        model = _float_model(synchronized=True)  # outside the scope; pruning keeps Keras's BN: synchronized
        model.set_weights(float_weights)
        for kind in ("qat", "pruning"):
            with strategy.scope():
                made, callbacks = _technique(kind, model, data[0])
                _compile(made)
            ke.distribute.check_same_scope(made)
            _fit(made, data, 2, callbacks)
            _assert_replicas_identical(made)

    def test_made_and_trained_without_strategy_inside_a_program_that_has_one(strategy, data, float_weights):
        """Built in a scope, quantized and compiled outside: the quantized model is a plain one-device model (no
        strategy at all), trained without one; nothing to reject."""
        with strategy.scope():
            model = _float_model()
        qat, callbacks = _technique("qat", model, data[0])
        _compile(qat)
        ke.distribute.check_same_scope(qat)
        _fit(qat, data, 2, callbacks)
        assert all(not isinstance(v.value, tf.distribute.DistributedValues) for v in qat.variables)

    def test_check_same_scope_names_the_parts(strategy, data, float_weights):
        model = _float_model()
        qat, _ = _technique("qat", model, data[0])
        ke.distribute.check_same_scope(qat)  # not compiled yet: the model and its variables agree
        with strategy.scope():
            _compile(qat)
        with pytest.raises(ValueError) as err:
            ke.distribute.check_same_scope(qat)
        message = str(err.value)
        assert f"model {qat.name!r}" in message
        assert "the model and its variables (e.g. " in message and "outside any tf.distribute scope" in message
        assert "its optimizer's variables (e.g. " in message and "a MirroredStrategy" in message
        assert "quantize_model" in message and "docs/distributed.md" in message

    # -- pruning ------------------------------------------------------------------------------------------------

    def test_pruning_replicas_identical_and_equal_single_device(strategy, data, float_weights):
        def make(scope):
            with scope():
                model = _float_model(synchronized=True)
                model.set_weights(float_weights)
                pruned = ke.prune_model(
                    model, ke.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=3, frequency=1), min_weights=0
                )
                _compile(pruned)
            _fit(pruned, data, 4, [ke.callbacks.UpdatePruning()])
            return pruned

        pd, ps = _both(strategy, make)
        _assert_replicas_identical(pd)
        _assert_matches(pd, ps)
        for suffix in ("_mask", "pruning_step", "armed"):
            assert {_aggregation(v) for v in _by_name(pd, suffix)} == {FIRST}, suffix
        for step in _by_name(pd, "pruning_step"):
            assert _copies(step) == [4] * REPLICAS
        sparsity = ke.pruning.layer_sparsities(pd)
        assert all(s == pytest.approx(0.5, abs=0.05) for s in sparsity.values()), sparsity
        plain = ke.strip(pd)
        np.testing.assert_allclose(
            plain.predict(data[0][:16], verbose=0), ke.strip(ps).predict(data[0][:16], verbose=0), atol=1e-5
        )

    # -- clustering and collaborative QAT -------------------------------------------------------------------------

    def test_clustering_then_preserving_qat_replicas_identical_and_equal_single_device(strategy, data, float_weights):
        x, _ = data

        def make(scope):
            with scope():
                model = _float_model(synchronized=True)
                model.set_weights(float_weights)
                clustered = ke.cluster_model(model, 4)
                _compile(clustered)
            _fit(clustered, data, 3)
            with scope():
                chained = ke.strip(clustered)
                qat = ke.quantize_model(chained, preserve="clusters")
                ke.calibrate(qat, x[:32], progress=False)
                _compile(qat)
            _fit(qat, data, 3, [ke.callbacks.FreezeBatchNorm(epoch=0)])
            return clustered, qat

        (cd, qd), (cs, qs) = _both(strategy, make)
        for d, s in ((cd, cs), (qd, qs)):
            _assert_replicas_identical(d)
            _assert_matches(d, s)
        for step in _by_name(cd, "cluster_step"):
            assert _copies(step) == [3] * REPLICAS and _aggregation(step) == NONE
        for v in _by_name(cd, "_indices"):
            assert _aggregation(v) == NONE  # re-assigned in every replica from mirrored values: checked identical
        for v in _by_name(qd, "_indices"):
            assert _aggregation(v) == FIRST
        kernel = ke.strip(cd).get_layer("conv2").kernel
        assert len(np.unique(np.asarray(kernel))) <= 4
        int8 = te.to_tflite(qd)
        assert te.find_float_islands(int8) == []
        for layer in qd.layers:  # QAT kept the clusters: every preserved kernel reads at most 4 centroids
            for state in getattr(layer, "preserved", {}).values():
                assert state["centroids"].shape[0] <= 4

    # -- keras_eff.distribute.patch_keras_multi_worker_fit (tests/test_multiworker.py runs it on 2 workers) ----------

    def test_multi_worker_patch_leaves_mirrored_strategy_alone(strategy, data, float_weights):
        """Last in this module: it patches Keras for the rest of this process, which must change nothing here."""
        from keras.src.backend.tensorflow import trainer as tf_trainer

        original = tf_trainer.reduce_per_replica
        values = strategy.run(lambda: {"loss": tf.constant(2.0), "v": tf.ones((3,))})
        before = tf.nest.map_structure(np.asarray, original(values, strategy, "auto"))
        assert ke.distribute.patch_keras_multi_worker_fit() is True
        assert ke.distribute.patch_keras_multi_worker_fit() is False  # once per process
        assert tf_trainer.reduce_per_replica is not original
        after = tf.nest.map_structure(np.asarray, tf_trainer.reduce_per_replica(values, strategy, "auto"))
        tf.nest.map_structure(np.testing.assert_array_equal, after, before)
        with strategy.scope():
            model = _float_model(synchronized=True)
            model.set_weights(float_weights)
            _compile(model)
        _fit(model, data, 2)
        _assert_replicas_identical(model)
