"""Plain Keras blocks: one block choice built from standard layers (Conv2D, DepthwiseConv2D, BatchNormalization,
ReLU or swish, squeeze-and-excitation from GlobalAveragePooling2D + 1x1 convs + Multiply, Add for the residual), and
for grouped cells :class:`GroupedConv2D`, a ``Conv2D`` with ``groups`` that trains at TensorFlow's native speed.

Only ops that int8 TFLite supports are used, so any architecture of a space exports to a microcontroller.
Layer names follow ``{prefix}_l{layer}_{part}``; :mod:`keras_eff.donna.supernet` extracts weights under the same
names.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import keras
import tensorflow as tf
from keras import layers

from .space import GROUP_WIDTH, BlockChoice, check_group_width

_NATIVE_GROUPED: bool | None = None


def native_grouped_conv() -> bool:
    """Whether TensorFlow computes grouped convolutions and their gradients itself, correctly, here.

    Keras 3's TensorFlow backend compiles every grouped convolution with XLA (``ops.conv``), whose CPU kernel made a
    training step of a grouped model about 57 times slower than a depthwise one on 2 CPU cores (docs/donna.md).
    TensorFlow's own kernels run them where oneDNN is on (the x86 default) or on a GPU; with
    ``TF_ENABLE_ONEDNN_OPTS=0`` its CPU gradients raise. The answer comes from one small grouped convolution
    (stride 2, two groups) and its gradients, compared with the same convolution computed group by group; run once
    per process, in a thread of its own (so that it runs eagerly also when asked while a ``tf.function`` is being
    traced).
    """
    global _NATIVE_GROUPED
    if _NATIVE_GROUPED is None:
        if keras.backend.backend() != "tensorflow":
            _NATIVE_GROUPED = False
        else:
            with ThreadPoolExecutor(1) as pool:
                _NATIVE_GROUPED = pool.submit(_probe_native_grouped).result()
    return _NATIVE_GROUPED


def _probe_native_grouped() -> bool:
    x = tf.reshape(tf.sin(tf.range(2 * 5 * 5 * 8, dtype=tf.float32)), (2, 5, 5, 8))
    k = tf.reshape(tf.cos(tf.range(3 * 3 * 4 * 6, dtype=tf.float32)), (3, 3, 4, 6))

    def grads(conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            tape.watch(k)
            loss = tf.reduce_sum(tf.square(conv()))
        return tape.gradient(loss, [x, k])

    def by_group():
        return tf.concat(
            [tf.nn.convolution(xi, ki, 2, "SAME") for xi, ki in zip(tf.split(x, 2, -1), tf.split(k, 2, -1))], -1
        )

    try:
        native = grads(lambda: tf.nn.convolution(x, k, 2, "SAME"))
    except tf.errors.OpError:
        return False
    return all(
        bool(tf.reduce_max(tf.abs(a - b)) <= 1e-4 * (1.0 + tf.reduce_max(tf.abs(b))))
        for a, b in zip(native, grads(by_group))
    )


def grouped_conv(x, kernel, strides=1, padding="same", dilation_rate=1):
    """A channels-last convolution whose kernel may hold fewer input channels than ``x`` (a grouped convolution:
    ``x.shape[-1] // kernel.shape[-2]`` groups), with TensorFlow's own kernels where :func:`native_grouped_conv`
    says they work, else ``keras.ops.conv``."""
    if x.shape[-1] == kernel.shape[-2] or not native_grouped_conv():
        return keras.ops.conv(x, kernel, strides=strides, padding=padding, dilation_rate=dilation_rate)
    return tf.nn.convolution(x, kernel, strides=strides, padding=padding.upper(), dilations=dilation_rate)


@keras.saving.register_keras_serializable(package="keras_eff")
class GroupedConv2D(layers.Conv2D):
    """A ``keras.layers.Conv2D`` (same arguments, weights and config) whose grouped convolution runs TensorFlow's
    own kernels where they work (:func:`native_grouped_conv`), not Keras's XLA path: the ``gr_ib`` cell's kxk
    convolution. Exported to TFLite it is one ``CONV_2D`` whose filter holds ``in_channels / groups`` input channels.
    Registered as ``keras_eff>GroupedConv2D``: a ``.keras`` file holding one loads after ``import keras_eff``.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        return grouped_conv(inputs, kernel, list(self.strides), self.padding, list(self.dilation_rate))


def se_channels(in_channels: int) -> int:
    """Width of the squeeze-and-excitation bottleneck of a layer with ``in_channels`` inputs (a quarter, >= 4)."""
    return max(4, in_channels // 4)


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, rounded to a multiple of 4 (at least 4); unchanged at width 1."""
    if width == 1.0:
        return int(channels)
    return max(4, int(round(channels * width / 4)) * 4)


def grouped_channels(channels: int, group_width: int) -> int:
    """``channels`` rounded up to a whole number of groups of ``group_width`` (at least one group)."""
    return max(1, -(-int(channels) // group_width)) * group_width


def layer_plan(
    choice: BlockChoice, in_channels: int, out_channels: int, stride: int, group_width: int = GROUP_WIDTH
) -> list:
    """Per stacked layer: (input channels, expanded channels, output channels, stride, residual). The width
    multiplier scales the expanded channels and the channels between stacked layers; the block's output keeps
    ``out_channels`` (the boundary's), so that blocks still chain. A ``gr_ib`` layer rounds its expanded channels
    up to a multiple of ``group_width``: its kxk convolution has ``expanded // group_width`` groups."""
    plan = []
    cin = in_channels
    for i in range(choice.depth):
        s = stride if i == 0 else 1
        cout = out_channels if i == choice.depth - 1 else scaled(out_channels, choice.width)
        cexp = scaled(cin * choice.expansion, choice.width)
        if choice.cell == "gr_ib":
            cexp = grouped_channels(cexp, group_width)
        plan.append((cin, cexp, cout, s, s == 1 and cin == cout))
        cin = cout
    return plan


def _activation(name: str, kind: str):
    return layers.ReLU(name=name) if kind == "relu" else layers.Activation("swish", name=name)


def apply_block(
    x,
    choice: BlockChoice,
    out_channels: int,
    stride: int,
    prefix: str,
    bn_momentum: float = 0.9,
    group_width: int = GROUP_WIDTH,
):
    """Applies the block ``choice`` to the Keras tensor ``x`` with standard Keras layers.

    Per stacked layer: a 1x1 expansion then a kxk depthwise convolution (``dw_ib``) or a kxk grouped convolution
    with ``group_width`` channels per group (``gr_ib``, a :class:`GroupedConv2D`), or one kxk convolution that
    expands (``fused_ib``), each followed by batch norm and the activation; optional squeeze-and-excitation; a 1x1
    projection with batch norm; and a residual ``Add`` where the layer keeps its shape. Layers are named
    ``{prefix}_l{layer}_{part}``; the output is an ``Identity`` layer ``{prefix}_out``.

    Args:
        x: A Keras tensor ``(batch, height, width, channels)`` of a functional model being built.
        choice: The `BlockChoice` to build.
        out_channels: The block's output channels.
        stride: The block's stride (1 or 2), carried by its first layer.
        prefix: The prefix of the layer names; must be unique within the model.
        bn_momentum: Momentum of the batch norms.
        group_width: Channels per group of a ``gr_ib`` cell (the block's ``BlockSpace.group_width``): 4, 8, 16 or
            32; the expanded channels are rounded up to a multiple of it.

    Returns:
        The block's output tensor ``(batch, ceil(height / stride), ceil(width / stride), out_channels)``.

    Example:
        ```python
        inputs = keras.Input((16, 16, 8))
        y = apply_block(inputs, BlockChoice(kernel=5, se=True), out_channels=16, stride=2, prefix="b0")
        model = keras.Model(inputs, y)   # output (None, 8, 8, 16)
        ```

    Raises:
        ValueError: If ``group_width`` is not one of 4, 8, 16, 32.
    """
    check_group_width(group_width)
    plan = layer_plan(choice, x.shape[-1], out_channels, stride, group_width)
    for i, (cin, cexp, cout, s, residual) in enumerate(plan):
        p = f"{prefix}_l{i}"
        inp = x
        if choice.cell in ("dw_ib", "gr_ib"):
            y = layers.Conv2D(cexp, 1, use_bias=False, name=f"{p}_expand")(x)
            y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_expand_bn")(y)
            y = _activation(f"{p}_expand_act", choice.activation)(y)
            if choice.cell == "dw_ib":
                y = layers.DepthwiseConv2D(choice.kernel, strides=s, padding="same", use_bias=False, name=f"{p}_dw")(y)
            else:
                y = GroupedConv2D(
                    cexp,
                    choice.kernel,
                    strides=s,
                    padding="same",
                    groups=cexp // group_width,
                    use_bias=False,
                    name=f"{p}_gr",
                )(y)
            part = "dw" if choice.cell == "dw_ib" else "gr"
            y = layers.BatchNormalization(momentum=bn_momentum, name=f"{p}_{part}_bn")(y)
            y = _activation(f"{p}_{part}_act", choice.activation)(y)
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


def build_block(
    choice: BlockChoice,
    input_shape,
    out_channels: int,
    stride: int,
    prefix: str = "block",
    bn_momentum: float = 0.9,
    group_width: int = GROUP_WIDTH,
) -> keras.Model:
    """The block ``choice`` alone as a Keras model, built with :func:`apply_block`.

    Args:
        choice: The `BlockChoice` to build.
        input_shape: ``(height, width, channels)`` of the block's input.
        out_channels: The block's output channels.
        stride: The block's stride (1 or 2).
        prefix: The prefix of the layer names (and of the model's name).
        bn_momentum: Momentum of the batch norms.
        group_width: Channels per group of a ``gr_ib`` cell (4, 8, 16 or 32).

    Returns:
        A new, freshly initialized functional `keras.Model` named ``{prefix}_{choice name}`` (dashes replaced by
        underscores).

    Example:
        ```python
        block = build_block(BlockChoice.from_name("fused_ib-k3-e2-d2-nose-relu"), (14, 14, 16), 24, 2)
        block.output_shape   # (None, 7, 7, 24)
        ```

    Raises:
        ValueError: If ``group_width`` is not one of 4, 8, 16, 32.
    """
    inputs = keras.Input(tuple(input_shape), name=f"{prefix}_input")
    outputs = apply_block(inputs, choice, out_channels, stride, prefix, bn_momentum, group_width)
    return keras.Model(inputs, outputs, name=f"{prefix}_{choice.name}".replace("-", "_"))
