"""Small reference models used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import keras
from keras import layers

from .fitting import build_training_state


def small_cnn(input_shape=(28, 28, 1), num_classes=10, width=16, bn_momentum=0.9, name="small_cnn"):
    """A plain CNN: conv-BN-ReLU blocks with pooling, then a dense classifier (about 30k parameters at width 16)."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < 2:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return build_training_state(model)


def ds_cnn(input_shape=(28, 28, 1), num_classes=10, width=16, bn_momentum=0.9, name="ds_cnn"):
    """Depthwise-separable CNN in the MobileNet style: depthwise and pointwise convs, each with BN and ReLU6."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    for i, (filters, stride) in enumerate(((2 * width, 1), (4 * width, 2), (4 * width, 1))):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"dw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"dw{i}_relu6")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"pw{i}_bn")(x)
        x = layers.ReLU(6.0, name=f"pw{i}_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def residual_cnn(input_shape=(28, 28, 1), num_classes=10, width=16, bn_momentum=0.9, name="residual_cnn"):
    """Two residual blocks joined by Add, ResNet style."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(name="stem_pool")(x)
    for i in range(2):
        shortcut = x
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"res{i}_conv1")(x)
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"res{i}_bn1")(y)
        y = layers.ReLU(name=f"res{i}_relu1")(y)
        y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"res{i}_conv2")(y)
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"res{i}_bn2")(y)
        x = layers.Add(name=f"res{i}_add")([shortcut, y])
        x = layers.ReLU(name=f"res{i}_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def concat_cnn(input_shape=(28, 28, 1), num_classes=10, width=16, bn_momentum=0.9, name="concat_cnn"):
    """Inception-style branches (1×1 and 3×3) joined by Concatenate."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i in range(2):
        a = layers.Conv2D(width, 1, activation="relu", name=f"mix{i}_1x1")(x)
        b = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"mix{i}_3x3")(x)
        x = layers.Concatenate(name=f"mix{i}_concat")([a, b])
        x = layers.MaxPooling2D(name=f"mix{i}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


ZOO = {"small_cnn": small_cnn, "ds_cnn": ds_cnn, "residual_cnn": residual_cnn, "concat_cnn": concat_cnn}


def _application(build, input_shape, num_classes, bn_momentum, name, **kwargs):
    """A keras.applications network (weights=None) on Fashion-MNIST-sized inputs: 28×28 padded to 32×32, logits out.
    The application's BatchNorm momentum (0.999) is lowered, since short runs leave such statistics far off."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.ZeroPadding2D(2, name="pad_to_32")(inputs) if input_shape[0] == 28 else inputs
    shape = (x.shape[1], x.shape[2], input_shape[-1])
    base = build(input_shape=shape, weights=None, include_top=False, pooling="avg", **kwargs)
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    outputs = layers.Dense(num_classes, name="logits")(base(x))
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2(input_shape=(28, 28, 1), num_classes=10, alpha=0.35, bn_momentum=0.9, name="mobilenet_v2"):
    """keras.applications.MobileNetV2 (nested, weights=None) with a logits head."""
    return _application(keras.applications.MobileNetV2, input_shape, num_classes, bn_momentum, name, alpha=alpha)


def mobilenet_v3_small(input_shape=(28, 28, 1), num_classes=10, alpha=0.75, bn_momentum=0.9, name="mobilenet_v3_small"):
    """keras.applications.MobileNetV3Small (nested, weights=None, no preprocessing layer) with a logits head."""
    return _application(
        keras.applications.MobileNetV3Small,
        input_shape,
        num_classes,
        bn_momentum,
        name,
        alpha=alpha,
        include_preprocessing=False,
        minimalistic=False,
    )
