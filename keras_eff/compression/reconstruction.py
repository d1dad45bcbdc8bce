"""Choosing which input channels of a layer to keep, and refitting the kept weights by least squares.

Both work on sampled rows: for a convolution, the input patches under randomly drawn output positions (im2col of a
sample), for a dense layer its input vectors. With patches ``X`` (rows × k·c_in) and the kernel as a matrix ``W``
(k·c_in × c_out), channel ``c`` contributes ``Z_c = X_c W_c`` to the output; dropping a set ``S`` of channels costs
``‖Σ_{c∈S} Z_c‖²  = 1_Sᵀ G 1_S`` with ``G[c, d] = ⟨Z_c, Z_d⟩``. Channels are dropped greedily, each time the one that
adds least to that error (ThiNet's greedy criterion, here in closed form from ``XᵀX`` and ``WWᵀ``). The kept weights
are then refit by ridge regression (scikit-learn) so the layer's output on the sampled rows matches the original.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge


def sample_positions(n_images, out_h, out_w, per_image, rng):
    """``per_image`` random output positions of each image: arrays (image, row, column)."""
    image = np.repeat(np.arange(n_images), per_image)
    return image, rng.integers(0, out_h, image.size), rng.integers(0, out_w, image.size)


def same_padding(size, kernel, stride, dilation):
    """(before, after) padding of TensorFlow's 'same' along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def conv_patches(x, layer, positions):
    """Rows ``(h, w, c)``-flattened of the input patches a Conv2D reads at the given output positions."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    if layer.padding == "same":
        pads = (same_padding(x.shape[1], kh, sh, dh), same_padding(x.shape[2], kw, sw, dw))
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    image, row, col = positions
    rows = row[:, None] * sh + np.arange(kh) * dh
    cols = col[:, None] * sw + np.arange(kw) * dw
    patches = x[image[:, None, None], rows[:, :, None], cols[:, None, :], :]
    return patches.reshape(len(image), -1)


def kernel_matrix(kernel):
    """A Conv2D or Dense kernel as the (k·c_in, c_out) matrix that maps patch rows to outputs."""
    return kernel.reshape(-1, kernel.shape[-1])


def channel_gram(patches, kernel, channels):
    """``G[c, d] = ⟨X_c W_c, X_d W_d⟩`` over the sampled rows."""
    x = patches.astype(np.float64)
    w = kernel_matrix(kernel).astype(np.float64)
    taps = w.shape[0] // channels
    product = (x.T @ x) * (w @ w.T)
    return product.reshape(taps, channels, taps, channels).sum(axis=(0, 2))


def removal_order(gram):
    """Channels in the greedy order of removal: each step drops the channel adding least output error."""
    channels = gram.shape[0]
    diag, cross = np.diag(gram).copy(), np.zeros(channels)
    alive = np.ones(channels, bool)
    order = []
    for _ in range(channels - 1):
        increase = np.where(alive, diag + 2 * cross, np.inf)
        c = int(np.argmin(increase))
        order.append(c)
        alive[c] = False
        cross += gram[:, c]
    return order


def kept_channels(order, channels, keep):
    """Sorted indices of the ``keep`` channels that survive the first ``channels - keep`` removals."""
    removed = set(order[: channels - keep])
    return np.array([c for c in range(channels) if c not in removed])


def columns_of(keep, channels, taps):
    """Patch columns of the kept channels, in (tap, kept channel) order."""
    return (np.arange(taps)[:, None] * channels + np.asarray(keep)[None, :]).reshape(-1)


def refit(patches, target, ridge=1e-3, fit_intercept=True):
    """Least-squares weights (columns × outputs) and intercept mapping ``patches`` to ``target``, regularised by
    ``ridge`` times the mean energy of a column."""
    x = patches.astype(np.float64)
    energy = float(np.mean(np.sum((x - x.mean(0)) ** 2 if fit_intercept else x**2, axis=0)))
    model = Ridge(alpha=ridge * energy + 1e-12, fit_intercept=fit_intercept)
    model.fit(x, target.astype(np.float64))
    intercept = model.intercept_ if fit_intercept else np.zeros(target.shape[1])
    return model.coef_.T, np.asarray(intercept)


__all__ = [
    "channel_gram",
    "columns_of",
    "conv_patches",
    "kept_channels",
    "kernel_matrix",
    "refit",
    "removal_order",
    "same_padding",
    "sample_positions",
]
