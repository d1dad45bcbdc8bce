import keras
import numpy as np
import pytest
from keras import layers

from keras_eff.errors import UnsupportedModelError
from keras_eff.graph import GraphInfo, clone, fold_batchnorm, rebuild
from keras_eff.models import ZOO


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, g.shape),
                    rng.normal(0, 0.3, b.shape),
                    rng.normal(0, 0.3, m.shape),
                    rng.uniform(0.5, 2, v.shape),
                ]
            )


@pytest.mark.parametrize("name", sorted(ZOO))
def test_fold_batchnorm_preserves_outputs_and_removes_bn(name, rng):
    model = ZOO[name](width=8)
    _randomize_bn(model, rng)
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batchnorm(model)
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded.layers)
    # the user's model is untouched and shares nothing with the new one
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not {id(v) for v in model.weights} & {id(v) for v in folded.weights}


def test_fold_keeps_bn_that_cannot_fold():
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(3, 3, activation="relu")(inputs)  # an activation sits between conv and BN
    x = layers.BatchNormalization()(x)
    branch = layers.Conv2D(3, 1)(x)
    model = keras.Model(inputs, [layers.BatchNormalization()(branch), branch])  # conv output also a model output
    folded = fold_batchnorm(model)
    assert sum(isinstance(layer, layers.BatchNormalization) for layer in folded.layers) == 2


def test_rebuild_sequential_nested_and_ops(rng):
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(4, activation="relu")], name="inner")
    inputs = keras.Input((4,))
    x = inner(inputs)
    x = keras.ops.add(x, 1.0) * 0.5  # raw ops in the graph, as in keras.applications.MobileNetV3
    model = keras.Model(inputs, layers.Dense(2)(x))
    copy = rebuild(model)
    x = rng.random((3, 4), dtype=np.float32)
    np.testing.assert_allclose(copy(x), model(x), rtol=1e-6)
    assert any(isinstance(layer, keras.Model) for layer in copy.layers)


def test_clone_replace_and_remove(rng):
    model = ZOO["small_cnn"](width=4)
    new = clone(model, remove=["relu0"], replace={"pool0": layers.AveragePooling2D(2, name="avg0")})
    names = [layer.name for layer in new.layers]
    assert "relu0" not in names and "avg0" in names and "pool0" not in names
    with pytest.raises(ValueError, match="no layer named nope.*its layers are"):
        clone(model, remove=["nope"])


def test_graph_info_sole_consumer():
    model = ZOO["residual_cnn"](width=4)
    info = GraphInfo.of(model)
    by_name = {n.operation.name: n for n in info.nodes}
    assert info.sole_consumer(by_name["stem"]).operation.name == "stem_bn"
    assert info.sole_consumer(by_name["stem_pool"]) is None  # feeds the block and the shortcut
    assert len(info.node_consumers(by_name["stem_pool"])) == 2


def test_subclassed_and_unbuilt_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(UnsupportedModelError, match="decorators"):
        rebuild(Net())
    with pytest.raises(UnsupportedModelError, match="not built"):
        rebuild(keras.Sequential([layers.Dense(2)]))
