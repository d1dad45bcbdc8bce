"""The linear part of each quantizable layer type, run with kernels handed in (fake-quantized, BN-folded).

Each entry knows: which weights are kernels, how to move a kernel's output channels to the last axis for per-channel
quantization (and back), and how to compute the layer's output from inputs and kernels. Bias and activation are
applied by the wrapper.
"""

from __future__ import annotations

from keras import layers, ops

from ..layers import kernel_layout, kernel_names  # noqa: F401  (kernel_names: the registry's, re-exported here)

# Layers whose linear part this module computes (a custom layer with kernels is called with its kernels replaced).
SUPPORTED = (
    layers.Conv1D,
    layers.Conv2D,
    layers.DepthwiseConv2D,
    layers.SeparableConv2D,
    layers.Dense,
    layers.Conv2DTranspose,
)


def unsupported_reason(layer) -> str | None:
    """Why a layer of a supported type still cannot be wrapped, or None."""
    if not isinstance(layer, SUPPORTED):
        return f"{type(layer).__name__} has no quantized implementation"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first data format (TFLite is channels_last)"
    # A grouped Conv2D is one int8 CONV_2D whose filter holds c_in / groups input channels (LiteRT's XNNPACK and
    # built-in kernels run it); ops.conv reads the groups from the kernel's shape. Grouped Conv1D is not tested.
    if getattr(layer, "groups", 1) != 1 and not isinstance(layer, layers.Conv2D):
        return f"grouped convolution (groups={layer.groups})"
    if isinstance(layer, layers.Conv1D) and layer.padding == "causal":
        return "causal padding"
    return None


def to_channels_last(layer, name, kernel):
    """The kernel reshaped so that its last axis is the output channel (for per-channel ranges).

    A Conv1D kernel becomes the (1, k, c_in, c_out) kernel of the 2-D convolution TFLite runs, and stays so: the
    converter cannot hold per-channel ranges through the reshape it would otherwise insert after the quantizer.
    """
    if isinstance(layer, layers.Conv1D):
        return ops.expand_dims(kernel, 0)
    layout = kernel_layout(layer, name)
    if layout == "depthwise":  # (..., c_in, multiplier) -> (..., 1, c_in·multiplier)
        return ops.reshape(kernel, tuple(kernel.shape[:-2]) + (1, kernel.shape[-2] * kernel.shape[-1]))
    if layout == "transpose":
        return ops.swapaxes(kernel, -1, -2)
    return kernel


def from_channels_last(layer, name, kernel, shape):
    if isinstance(layer, layers.Conv1D):
        return kernel  # kept as the 2-D kernel (see to_channels_last)
    layout = kernel_layout(layer, name)
    if layout == "depthwise":
        return ops.reshape(kernel, shape)
    if layout == "transpose":
        return ops.swapaxes(kernel, -1, -2)
    return kernel


def linear(layer, x, kernels: dict, between=None):
    """The layer's output before bias and activation. ``between`` quantizes the tensor between the two halves of a
    separable convolution."""
    if isinstance(layer, layers.Dense):
        return ops.matmul(x, kernels["kernel"])
    if isinstance(layer, layers.SeparableConv2D):
        y = ops.depthwise_conv(
            x,
            kernels["depthwise_kernel"],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        if between is not None:
            y = between(y)
        return ops.conv(y, kernels["pointwise_kernel"], strides=1, padding="valid", data_format=layer.data_format)
    if isinstance(layer, layers.DepthwiseConv2D):
        return ops.depthwise_conv(
            x,
            kernels["kernel"],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, layers.Conv2DTranspose):
        return ops.conv_transpose(
            x,
            kernels["kernel"],
            strides=layer.strides,
            padding=layer.padding,
            output_padding=layer.output_padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
    kernel = kernels["kernel"]
    if isinstance(layer, layers.Conv1D) and len(kernel.shape) == 4:  # the 2-D form of a quantized Conv1D
        y = ops.conv(
            ops.expand_dims(x, 1),
            kernel,
            strides=(1,) + tuple(layer.strides),
            padding=layer.padding,
            dilation_rate=(1,) + tuple(layer.dilation_rate),
            data_format=layer.data_format,
        )
        return ops.squeeze(y, 1)
    return ops.conv(
        x,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
