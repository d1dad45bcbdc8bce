"""Spatial SVD (Jaderberg et al. 2014, as in AIMET): a kh×kw convolution becomes a kh×1 convolution to ``rank``
channels followed by a 1×kw convolution; a dense layer becomes a low-rank pair.

The kernel ``W[h, w, c, o]`` is laid out as the matrix ``M[(h, c), (w, o)]`` of shape ``(kh·c_in, kw·c_out)``;
its truncated SVD ``M ≈ U_r S_r V_rᵀ`` gives the vertical kernel ``U_r √S_r`` and the horizontal one ``√S_r V_rᵀ``.
Strides, dilation and padding split by axis, so at full rank the pair computes exactly what the layer did.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..graph import GraphInfo, clone_layer, rebuild
from ..options import resolve_config
from .config import SpatialSvdConfig
from .inputs import NothingToCompressError, check_finite_weights, check_ratio
from .pipeline import CompressionResult, Scheme, compress


def svd_factors(matrix):
    """The SVD of a 2-D array in float64: ``(u, s, vt)``."""
    return np.linalg.svd(np.asarray(matrix, np.float64), full_matrices=False)


def split_conv_kernel(kernel, rank, factors=None):
    """Splits a k×k convolution kernel into a k×1 and a 1×k kernel of a given rank (spatial SVD).

    Args:
        kernel: A numpy kernel of shape ``(kh, kw, c_in, c_out)``.
        rank: Channels between the two kernels, from 1 to ``min(kh·c_in, kw·c_out)``.
        factors: ``(u, s, vt)``, the SVD of the kernel laid out as a ``(kh·c_in, kw·c_out)`` matrix, to reuse across
            ranks; computed when None.

    Returns:
        ``(vertical, horizontal)``: kernels of shapes ``(kh, 1, c_in, rank)`` and ``(1, kw, rank, c_out)`` in the
        kernel's dtype. A kh×1 convolution with the first followed by a 1×kw convolution with the second is the best
        rank-``rank`` approximation of the layer, exact at full rank.
    """
    kh, kw, cin, cout = kernel.shape
    u, s, vt = factors or svd_factors(np.transpose(kernel, (0, 2, 1, 3)).reshape(kh * cin, kw * cout))
    root = np.sqrt(s[:rank])
    vertical = (u[:, :rank] * root).reshape(kh, cin, rank)[:, None]
    horizontal = (root[:, None] * vt[:rank]).reshape(rank, kw, cout).transpose(1, 0, 2)[None]
    return vertical.astype(kernel.dtype), horizontal.astype(kernel.dtype)


def split_dense_kernel(kernel, rank, factors=None):
    """Splits a dense kernel into two low-rank kernels (truncated SVD).

    Args:
        kernel: A numpy kernel of shape ``(in, units)``.
        rank: The inner dimension, from 1 to ``min(in, units)``.
        factors: ``(u, s, vt)``, the kernel's SVD, to reuse across ranks; computed when None.

    Returns:
        ``(first, second)`` of shapes ``(in, rank)`` and ``(rank, units)`` in the kernel's dtype, whose product is
        the best rank-``rank`` approximation of ``kernel``.
    """
    u, s, vt = factors or svd_factors(kernel)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(kernel.dtype), (root[:, None] * vt[:rank]).astype(kernel.dtype)


def _eligible(layer):
    if isinstance(layer, layers.Dense):
        return len(layer.kernel.shape) == 2
    return (
        type(layer) is layers.Conv2D
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and min(layer.kernel_size) > 1
    )


class SpatialSvdScheme(Scheme):
    """Spatial SVD of k×k convolutions and low-rank dense layers; the setting of a layer is its rank."""

    method = "spatial_svd"

    def __init__(self, model, params, data=None):
        super().__init__(model, params, data)
        self.info = GraphInfo.of(model)
        self.targets = {}  # name -> (layer, input shape, output shape)
        for node in self.info.nodes:
            op = node.operation
            if (
                isinstance(op, keras.layers.Layer)
                and not isinstance(op, keras.Model)
                and _eligible(op)
                and self.info.calls(op) == 1
            ):
                self.targets[op.name] = (op, node.input_tensors[0].shape, node.outputs[0].shape)
        self._factors = {}

    def candidates(self) -> list:
        names = self.chosen(list(self.targets))
        if not names:
            raise NothingToCompressError(
                f"model {self.model.name!r} has no layer spatial SVD can factorize (a Conv2D with a k×k kernel, "
                f"k > 1, groups=1, channels_last; or a Dense layer) among those selected"
            )
        for name in names:
            check_finite_weights(self.targets[name][0])
        return names

    # ranks and costs ---------------------------------------------------------------------------------------------
    def _per_rank(self, name):
        """(MACs per unit of rank, params per unit of rank, fixed params, full rank)."""
        layer, shape_in, shape_out = self.targets[name]
        bias = layer.bias.shape[0] if layer.use_bias else 0
        if isinstance(layer, layers.Dense):
            rows = int(np.prod(shape_out[1:-1])) if len(shape_out) > 2 else 1
            n_in, units = layer.kernel.shape
            return rows * (n_in + units), n_in + units, bias, min(n_in, units)
        kh, kw, cin, cout = layer.kernel.shape
        out_h, out_w = shape_out[1], shape_out[2]
        in_w = shape_in[2]
        return (
            out_h * in_w * kh * cin + out_h * out_w * kw * cout,
            kh * cin + kw * cout,
            bias,
            min(kh * cin, kw * cout),
        )

    def factorized_cost(self, name, rank) -> dict:
        macs, params, fixed, _ = self._per_rank(name)
        return {"macs": rank * macs, "params": rank * params + fixed}

    def setting_of(self, name, ratio):
        per_macs, per_params, fixed, full = self._per_rank(name)
        orig = self.layer_cost[name]
        if self.params.cost_metric == "macs":
            rank = int(ratio * orig.macs // per_macs)
        else:
            rank = int((ratio * orig.params - fixed) // per_params)
        rank -= rank % self.params.multiple
        if rank < 1 or rank >= full:
            return None
        cost = self.factorized_cost(name, rank)
        if cost["macs"] >= orig.macs and cost["params"] >= orig.params:
            return None
        return rank

    def cost_of(self, settings) -> dict:
        total = {"macs": self.cost.total_macs, "params": self.cost.total_params}
        for name, rank in settings.items():
            orig, new = self.layer_cost[name], self.factorized_cost(name, rank)
            total["macs"] += new["macs"] - orig.macs
            total["params"] += new["params"] - orig.params
        return total

    def weight_error(self, name, rank) -> float:
        s = self.factors(name)[1]
        return float(np.sum(s[rank:] ** 2) / max(np.sum(s**2), 1e-30))

    # building ----------------------------------------------------------------------------------------------------
    def factors(self, name):
        if name not in self._factors:
            layer = self.targets[name][0]
            kernel = np.asarray(layer.kernel)
            if isinstance(layer, layers.Dense):
                self._factors[name] = svd_factors(kernel)
            else:
                kh, kw, cin, cout = kernel.shape
                self._factors[name] = svd_factors(np.transpose(kernel, (0, 2, 1, 3)).reshape(kh * cin, kw * cout))
        return self._factors[name]

    def build(self, settings, final=False) -> keras.Model:
        def transform(rb, node, args, kwargs):
            name = getattr(node.operation, "name", None)
            if name not in settings or self.targets.get(name, (None,))[0] is not node.operation:
                return None
            return factorized_call(node.operation, settings[name], args, kwargs, self.factors(name))

        return rebuild(self.model, transform)


def factorized_call(layer, rank, args, kwargs, factors=None):
    """Calls the rank-``rank`` pair that replaces ``layer`` (named ``<name>_svd_a`` and ``<name>_svd_b``) on the
    layer's arguments and returns its output."""
    kernel = np.asarray(layer.kernel)
    if isinstance(layer, layers.Dense):
        first = clone_layer(
            layer, name=f"{layer.name}_svd_a", units=rank, use_bias=False, activation=None, activity_regularizer=None
        )
        second = clone_layer(layer, name=f"{layer.name}_svd_b")
        k_a, k_b = split_dense_kernel(kernel, rank, factors)
    else:
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
        first = clone_layer(
            layer,
            name=f"{layer.name}_svd_a",
            filters=rank,
            kernel_size=(kh, 1),
            strides=(sh, 1),
            dilation_rate=(dh, 1),
            use_bias=False,
            activation=None,
            activity_regularizer=None,
        )
        second = clone_layer(
            layer, name=f"{layer.name}_svd_b", kernel_size=(1, kw), strides=(1, sw), dilation_rate=(1, dw)
        )
        k_a, k_b = split_conv_kernel(kernel, rank, factors)
    out = second(first(*args, **kwargs))
    first.set_weights([k_a])
    second.set_weights([k_b] + ([np.asarray(layer.bias)] if layer.use_bias else []))
    return out


def spatial_svd(
    model, target_ratio, data=None, eval_fn=None, config: SpatialSvdConfig | dict | None = None, verbose=True, **kwargs
) -> CompressionResult:
    """Compresses a model to a fraction of its MACs (or parameters) by spatial SVD, with ranks chosen per layer.

    Every eligible layer (a ``Conv2D`` with a k×k kernel, k > 1, groups=1, channels_last, called once; every
    ``Dense`` layer called once) unless ``config`` narrows the choice, is factorized alone at each candidate
    ratio and scored: by ``eval_fn`` where given, else by the relative error of the model's outputs on ``data``, else
    by the layer's relative weight error. The ranks are then chosen greedily for the least predicted loss within the
    target (`select_ratios`). A factorized layer becomes ``<name>_svd_a`` (k×1 convolution, or dense to ``rank``
    units, no bias or activation) and ``<name>_svd_b`` (1×k convolution or dense, with the layer's bias and
    activation).

    Args:
        model: A trained Functional or Sequential model. Not changed.
        target_ratio: The fraction of the model's cost to keep (``config.cost_metric``: MACs by default),
            strictly between 0 and 1.
        data: Typical inputs for the output-error score: an array shaped like the model's single input, an
            ``(x, y)`` pair or a ``tf.data.Dataset``; optional.
        eval_fn: ``eval_fn(model) -> float``, higher is better (for example accuracy on held-out data); the model it
            gets is not compiled. Called for the input model and for each candidate.
        config: A `SpatialSvdConfig` or a dict of its fields; default ``SpatialSvdConfig()``.
        verbose: Show a progress bar of the sensitivity analysis.
        **kwargs: Fields of `SpatialSvdConfig` (``multiple=8``, ``exclude=["stem"]``, ...), each overriding
            ``config``'s.

    Returns:
        A `CompressionResult`: ``.model`` is a new plain Keras model; ``.layer_ratios``, ``.layer_settings``
        (ranks), ``.achieved_ratio``, ``.mac_ratio``, ``.sensitivity`` and ``.summary()`` describe the choice.

    Raises:
        ValueError: If ``target_ratio`` is not strictly between 0 and 1, ``config.layers``/``exclude`` names a
            layer the model lacks, a candidate layer holds NaN or infinite weights, or ``data`` does not fit the
            model's input.
        TypeError: If ``target_ratio`` is not a number, ``config`` is neither a `SpatialSvdConfig` nor a dict, a
            keyword is not one of its fields, or ``eval_fn`` is not callable.
        NothingToCompressError: If no eligible layer is selected, or the target cannot be reached with the candidate
            ratios.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        def eval_fn(m):  # higher is better
            return float((m.predict(x_val, verbose=0).argmax(-1) == y_val).mean())

        result = keras_eff.compression.spatial_svd(model, 0.5, eval_fn=eval_fn)
        print(result.summary())
        small = result.model  # fine-tune, then export
        ```
    """
    target_ratio = check_ratio(target_ratio)
    config = resolve_config(SpatialSvdConfig, config, kwargs, "spatial_svd")
    return compress(SpatialSvdScheme(model, config, data), target_ratio, data, eval_fn, verbose)


__all__ = [
    "SpatialSvdScheme",
    "factorized_call",
    "spatial_svd",
    "split_conv_kernel",
    "split_dense_kernel",
    "svd_factors",
]
