"""Tiny models for the microcontroller, ONNX and CLI tests (untrained: these tests check plumbing, not accuracy)."""

import numpy as np


def random_images(n, seed=0, shape=(28, 28, 1)):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def tiny_cnn(kind="small_cnn", seed=0):
    import keras

    from keras_eff.models import ZOO

    keras.utils.set_random_seed(seed)
    return ZOO[kind](width=4)


def gelu_model():
    """A float model with a GELU op, which TFLite Micro does not register."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), name="features")
    x = layers.Dense(4, activation="gelu", name="hidden")(inp)
    return keras.Model(inp, layers.Dense(2, name="out")(x), name="gelu_model")


def fake_quant_model(out_range=4.0):
    """A Keras model whose layers call TensorFlow's fake-quant ops, as QAT models do: per-tensor on activations,
    per-channel on the conv kernel. The output is fake-quantized to [-out_range, out_range] (255 steps)."""
    import keras
    import tensorflow as tf
    from keras import layers

    class FakeQuant(layers.Layer):
        def __init__(self, lo, hi, **kw):
            super().__init__(**kw)
            self.lo, self.hi = float(lo), float(hi)

        def call(self, x):
            return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

    class FakeQuantConv(layers.Layer):
        def __init__(self, filters, **kw):
            super().__init__(**kw)
            self.filters = filters

        def build(self, shape):
            self.kernel = self.add_weight(shape=(3, 3, shape[-1], self.filters), initializer="glorot_uniform")
            self.bias = self.add_weight(shape=(self.filters,), initializer="zeros")

        def call(self, x):
            m = tf.reduce_max(tf.abs(self.kernel), axis=[0, 1, 2])
            k = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                self.kernel, -m, m, num_bits=8, narrow_range=True
            )
            return tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME") + self.bias)

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1), name="image")
    x = FakeQuant(0.0, 1.0, name="fq_in")(inp)
    x = FakeQuantConv(4, name="conv")(x)
    x = FakeQuant(0.0, 4.0, name="fq_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(3, name="logits")(x)
    out = FakeQuant(-out_range, out_range, name="fq_out")(x)
    return keras.Model(inp, out, name="fake_quant_model")


def two_input_model():
    """A float model with two inputs whose order in a TFLite file differs from the model's (the file sorts them by
    name): an image and a feature vector, named so."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="zeta_image")
    features = keras.Input((5,), name="alpha_features")
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(image))
    h = layers.Concatenate()([h, layers.Dense(4, activation="relu")(features)])
    return keras.Model([image, features], layers.Dense(3, name="out")(h), name="two_inputs")
