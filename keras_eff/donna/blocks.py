"""Plain Keras blocks: one block choice built from standard layers (Conv2D, DepthwiseConv2D, BatchNormalization,
ReLU or swish, squeeze-and-excitation from GlobalAveragePooling2D + 1x1 convs + Multiply, Add for the residual).

Only ops that int8 TFLite supports are used, so any architecture of a space exports to a microcontroller.
Layer names follow ``{prefix}_l{layer}_{part}``; :mod:`keras_eff.donna.supernet` extracts weights under the same
names.
"""

from __future__ import annotations

import keras
from keras import layers

from .space import BlockChoice


def se_channels(in_channels: int) -> int:
    """Width of the squeeze-and-excitation bottleneck of a layer with ``in_channels`` inputs (a quarter, >= 4)."""
    return max(4, in_channels // 4)


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, rounded to a multiple of 4 (at least 4); unchanged at width 1."""
    if width == 1.0:
        return int(channels)
    return max(4, int(round(channels * width / 4)) * 4)


def layer_plan(choice: BlockChoice, in_channels: int, out_channels: int, stride: int) -> list:
    """Per stacked layer: (input channels, expanded channels, output channels, stride, residual). The width
    multiplier scales the expanded channels and the channels between stacked layers; the block's output keeps
    ``out_channels`` (the boundary's), so that blocks still chain."""
    plan = []
    cin = in_channels
    for i in range(choice.depth):
        s = stride if i == 0 else 1
        cout = out_channels if i == choice.depth - 1 else scaled(out_channels, choice.width)
        plan.append((cin, scaled(cin * choice.expansion, choice.width), cout, s, s == 1 and cin == cout))
        cin = cout
    return plan


def _activation(name: str, kind: str):
    return layers.ReLU(name=name) if kind == "relu" else layers.Activation("swish", name=name)


def apply_block(x, choice: BlockChoice, out_channels: int, stride: int, prefix: str, bn_momentum: float = 0.9):
    """Applies the block ``choice`` to the Keras tensor ``x`` with standard Keras layers.

    Per stacked layer: a 1x1 expansion, a kxk depthwise convolution (``dw_ib``) or one kxk convolution that expands
    (``fused_ib``), each followed by batch norm and the activation; optional squeeze-and-excitation; a 1x1
    projection with batch norm; and a residual ``Add`` where the layer keeps its shape. Layers are named
    ``{prefix}_l{layer}_{part}``; the output is an ``Identity`` layer ``{prefix}_out``.

    Args:
        x: A Keras tensor ``(batch, height, width, channels)`` of a functional model being built.
        choice: The `BlockChoice` to build.
        out_channels: The block's output channels.
        stride: The block's stride (1 or 2), carried by its first layer.
        prefix: The prefix of the layer names; must be unique within the model.
        bn_momentum: Momentum of the batch norms.

    Returns:
        The block's output tensor ``(batch, ceil(height / stride), ceil(width / stride), out_channels)``.

    Example:
        ```python
        inputs = keras.Input((16, 16, 8))
        y = apply_block(inputs, BlockChoice(kernel=5, se=True), out_channels=16, stride=2, prefix="b0")
        model = keras.Model(inputs, y)   # output (None, 8, 8, 16)
        ```
    """
    for i, (cin, cexp, cout, s, residual) in enumerate(layer_plan(choice, x.shape[-1], out_channels, stride)):
        p = f"{prefix}_l{i}"
        inp = x
        if choice.cell == "dw_ib":
            y = layers.Conv2D(cexp, 1, use_bias=False, name=f"{p}_expand")(x)
            y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_expand_bn")(y)
            y = _activation(f"{p}_expand_act", choice.activation)(y)
            y = layers.DepthwiseConv2D(choice.kernel, strides=s, padding="same", use_bias=False, name=f"{p}_dw")(y)
            y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_dw_bn")(y)
            y = _activation(f"{p}_dw_act", choice.activation)(y)
        else:
            y = layers.Conv2D(cexp, choice.kernel, strides=s, padding="same", use_bias=False, name=f"{p}_fused")(x)
            y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_fused_bn")(y)
            y = _activation(f"{p}_fused_act", choice.activation)(y)
        if choice.se:
            z = layers.GlobalAveragePooling2D(keepdims=True, name=f"{p}_se_pool")(y)
            z = layers.Conv2D(se_channels(cin), 1, name=f"{p}_se_reduce")(z)
            z = _activation(f"{p}_se_act", choice.activation)(z)
            z = layers.Conv2D(cexp, 1, activation="sigmoid", name=f"{p}_se_expand")(z)
            y = layers.Multiply(name=f"{p}_se_scale")([y, z])
        y = layers.Conv2D(cout, 1, use_bias=False, name=f"{p}_project")(y)
        y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_project_bn")(y)
        x = layers.Add(name=f"{p}_add")([inp, y]) if residual else y
    return layers.Identity(name=f"{prefix}_out")(x)


def build_block(choice: BlockChoice, input_shape, out_channels: int, stride: int, prefix: str = "block",
                bn_momentum: float = 0.9) -> keras.Model:
    """The block ``choice`` alone as a Keras model, built with :func:`apply_block`.

    Args:
        choice: The `BlockChoice` to build.
        input_shape: ``(height, width, channels)`` of the block's input.
        out_channels: The block's output channels.
        stride: The block's stride (1 or 2).
        prefix: The prefix of the layer names (and of the model's name).
        bn_momentum: Momentum of the batch norms.

    Returns:
        A new, freshly initialized functional `keras.Model` named ``{prefix}_{choice name}`` (dashes replaced by
        underscores).

    Example:
        ```python
        block = build_block(BlockChoice.from_name("fused_ib-k3-e2-d2-nose-relu"), (14, 14, 16), 24, 2)
        block.output_shape   # (None, 7, 7, 24)
        ```
    """
    inputs = keras.Input(tuple(input_shape), name=f"{prefix}_input")
    outputs = apply_block(inputs, choice, out_channels, stride, prefix, bn_momentum)
    return keras.Model(inputs, outputs, name=f"{prefix}_{choice.name}".replace("-", "_"))
