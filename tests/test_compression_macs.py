import keras
import pytest
from keras import layers

import tflite_export
from keras_eff.compression import count_macs
from keras_eff.models import ZOO


def test_hand_computed_layers():
    inputs = keras.Input((10, 12, 3))
    x = layers.Conv2D(8, (3, 5), strides=2, padding="same", name="conv")(inputs)  # 5×6 out
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", name="dw")(x)  # 3×4×16
    x = layers.SeparableConv2D(6, 3, padding="same", use_bias=False, name="sep")(x)  # 3×4×6
    x = layers.Conv2DTranspose(4, 2, strides=2, name="tconv")(x)  # 6×8×4
    x = layers.Conv2D(6, 3, groups=2, padding="same", name="grouped")(x)  # 6×8×6
    x = layers.Reshape((48, 6))(x)
    x = layers.Conv1D(5, 3, name="conv1d")(x)  # 46×5
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(7, name="fc")(x)
    cost = count_macs(keras.Model(inputs, outputs)).by_name()
    assert cost["conv"].macs == 5 * 6 * 8 * (3 * 5 * 3) and cost["conv"].params == 3 * 5 * 3 * 8 + 8
    assert cost["dw"].macs == 3 * 4 * 16 * 9 and cost["dw"].params == 9 * 16 + 16
    assert cost["sep"].macs == 3 * 4 * 16 * 9 + 3 * 4 * 16 * 6 and cost["sep"].params == 9 * 16 + 16 * 6
    assert cost["tconv"].macs == 3 * 4 * 6 * (2 * 2 * 4) and cost["tconv"].params == 2 * 2 * 4 * 6 + 4
    assert cost["grouped"].macs == 6 * 8 * 6 * (3 * 3 * 2) and cost["grouped"].params == 3 * 3 * 2 * 6 + 6
    assert cost["conv1d"].macs == 46 * 5 * 3 * 6
    assert cost["fc"].macs == 5 * 7 and cost["fc"].params == 5 * 7 + 7
    assert len(cost) == 7  # pooling, reshape and the input count nothing


def test_nested_and_shared_layers():
    shared = layers.Dense(4, name="shared")
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="d")], name="inner")
    inputs = keras.Input((4,))
    outputs = inner(shared(shared(inputs)))
    cost = count_macs(keras.Model(inputs, outputs))
    assert [c.name for c in cost.layers] == ["shared", "shared", "inner/d"]
    assert cost.total_macs == 16 + 16 + 12
    assert cost.total_params == 20 + 15  # the shared layer's weights count once


def _mixed_model():
    inputs = keras.Input((16, 16, 3))
    x = layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)(inputs)
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    x = layers.Conv2D(6, 3, strides=2, groups=2)(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = layers.Reshape((-1, 12))(x)
    x = layers.Conv1D(5, 3)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(7)(x))


@pytest.mark.parametrize("name", ["ds_cnn", "concat_cnn", "mixed"])
def test_agrees_with_tflite_count(name):
    model = _mixed_model() if name == "mixed" else ZOO[name](width=4)
    tflite = tflite_export.count_macs(tflite_export.to_tflite(model, quantize=False))
    assert count_macs(model).total_macs == tflite.total_macs
