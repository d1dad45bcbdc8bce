"""Custom layers opt in to pruning and clustering through the layer registry: a ``keras_eff_facts()`` method or
``register_layer``. A custom layer that declares nothing is left alone, as before."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_eff as ke
from keras_eff.layers import LayerFacts, register_layer, unregister_layer
from keras_eff.pruning import ConstantSparsity, PruneWrapper, UpdatePruning

FACTS = LayerFacts(kernels={"kernel": "last"}, prunable=True, clusterable=True)


class ScaledDense(layers.Layer):
    """x @ kernel · scale: a kernel keras-eff cannot know about unless told."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units), initializer="glorot_uniform")
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, x):
        return ops.matmul(x, self.kernel) * self.scale

    def compute_output_shape(self, input_shape):  # the wrappers ask their layer
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class DeclaredDense(ScaledDense):
    def keras_eff_facts(self):
        return FACTS


class RegisteredDense(ScaledDense):
    pass


@pytest.fixture
def registered():
    register_layer(RegisteredDense, FACTS)
    yield
    unregister_layer(RegisteredDense)


def _model(cls):
    inputs = keras.Input((16,))
    x = cls(32, name="custom")(inputs)
    x = layers.ReLU()(x)
    outputs = layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 16)).astype("float32"), rng.integers(0, 4, 32)


def _kernel(model, name="custom"):
    return np.asarray(model.get_layer(name).kernel)


def _prune_and_strip(model):
    pruned = ke.prune_model(model, ConstantSparsity(0.5, begin_step=0, frequency=1), min_weights=0)
    wrapped = sorted(w.layer.name for w in pruned.layers if isinstance(w, PruneWrapper))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[UpdatePruning()])
    return wrapped, ke.strip(pruned)


def _cluster_and_strip(model):
    clustered = ke.cluster_model(model, n_clusters=4)
    return sorted(ke.clustering_report(clustered).clustered_layers), ke.strip(clustered)


@pytest.mark.parametrize("cls", [DeclaredDense, RegisteredDense], ids=["keras_eff_facts", "register_layer"])
def test_custom_layer_with_facts_is_pruned_and_clustered(cls, registered):
    model = _model(cls)
    wrapped, stripped = _prune_and_strip(model)
    assert wrapped == ["custom", "head"]
    kernel = _kernel(stripped)
    assert kernel.shape == (16, 32)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)

    clustered_names, stripped = _cluster_and_strip(model)
    assert clustered_names == ["custom", "head"]
    assert np.unique(_kernel(stripped)).size <= 4
    report = ke.clustering_report(stripped)
    assert "custom/kernel" in {k.name for k in report.kernels}


def test_undeclared_custom_layer_is_left_alone():
    model = _model(ScaledDense)
    before = _kernel(model)
    wrapped, stripped = _prune_and_strip(model)
    assert wrapped == ["head"]
    assert not np.any(_kernel(stripped) == 0)  # trained, not pruned
    assert np.mean(_kernel(stripped, "head") == 0) == pytest.approx(0.5, abs=0.02)
    clustered_names, stripped = _cluster_and_strip(model)
    assert clustered_names == ["head"]
    np.testing.assert_array_equal(_kernel(stripped), before)
    with pytest.raises(ValueError, match=r"layer 'custom' \(ScaledDense\) has no kernel to cluster"):
        ke.cluster(model.get_layer("custom"))
    with pytest.raises(ValueError, match=r"layer 'custom' \(ScaledDense\) has no kernel pruning can act on"):
        ke.prune(model.get_layer("custom"))


class Block(layers.Layer):
    """A custom layer calling Keras layers (a Dense with a residual), as users write blocks."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.fc = layers.Dense(units, name="fc")

    def call(self, x):
        return x + ops.relu(self.fc(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_custom_block_calling_prunable_layers_is_named_in_a_warning_and_the_report():
    """prune_model and cluster_model rewrite the model's graph: the Dense a block calls stays as it is. That used to
    be silent (the report did not even count its kernel); now a warning names the block and its layer, and
    sparsity_report has a dense row with its kernel."""
    inputs = keras.Input((16,))
    x = Block(16, name="block")(layers.Dense(16, name="stem")(inputs))
    model = keras.Model(inputs, layers.Dense(4, name="head")(x))
    with pytest.warns(UserWarning, match=r"prune_model: layers block \(Block: fc\) call prunable layers"):
        wrapped, stripped = _prune_and_strip(model)
    assert wrapped == ["head", "stem"]
    with pytest.warns(UserWarning, match="prune_model: layers block"):
        report = ke.sparsity_report(ke.prune_model(model, 0.5, min_weights=0))
    (row,) = [r for r in report.rows if r["layer"] == "block"]
    assert row["weights"] == 16 * 16 and row["status"].startswith("dense: the layers it calls (fc)")
    assert "block" in report.skipped
    with pytest.warns(UserWarning, match=r"cluster_model: layers block \(Block: fc\) call clusterable"):
        clustered_names, _ = _cluster_and_strip(model)
    assert clustered_names == ["head", "stem"]
