"""Channel pruning (He et al. 2017, as in AIMET): remove input channels of chosen layers, with the matching
outputs of the layers before them, and refit the remaining weights by least squares on sampled activations.

The final model is built layer by layer in graph order: each layer's kept weights are refit on the inputs it sees
in the model pruned so far, against the outputs the original model gave, so later layers correct earlier errors.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from ..graph import GraphInfo, tensors_in
from ..options import resolve_config
from .channel_groups import WeightState, _dense_like, find_groups
from .config import ChannelPruningConfig
from .inputs import NothingToCompressError, check_finite_weights, check_ratio, sample_array
from .pipeline import CompressionResult, Scheme, compress
from .reconstruction import (
    channel_gram,
    columns_of,
    conv_patches,
    kept_channels,
    kernel_matrix,
    refit,
    removal_order,
    sample_positions,
)


class ChannelPruningScheme(Scheme):
    """Channel pruning; the setting of a layer is the number of input channels it keeps."""

    method = "channel_pruning"

    def __init__(self, model, params, data):
        super().__init__(model, params, data)
        n_images = math.ceil(params.num_reconstruction_samples / params.samples_per_image)
        self.x = sample_array(model, data, n_images)
        self.info = GraphInfo.of(model)
        self.groups = {g.consumer: g for g in find_groups(model)}
        self.layers = {layer.name: layer for layer in model.layers}
        self._prepared = (None, None)

    def candidates(self) -> list:
        names = self.chosen(list(self.groups))
        if not names:
            raise NothingToCompressError(
                f"model {self.model.name!r} has no layer whose input channels can be pruned among those selected: "
                f"that needs a Conv2D (groups=1) or a Dense on a vector whose input comes from another Conv2D or "
                f"Dense through per-channel layers only (BatchNorm, activations, pooling, depthwise conv), with "
                f"no other reader (residual adds and concatenations pin their channels)"
            )
        for name in names:
            group = self.groups[name]
            for layer in [group.consumer, group.producer, *group.channelwise]:
                check_finite_weights(self.layers[layer])
        return names

    def setting_of(self, name, ratio):
        channels, multiple = self.groups[name].channels, self.params.multiple
        keep = int(ratio * channels) // multiple * multiple
        return keep if 1 <= keep < channels else None

    def cost_of(self, settings) -> dict:
        scale_in: dict[str, float] = {}
        scale_out: dict[str, float] = {}
        for name, keep in settings.items():
            group = self.groups[name]
            f = keep / group.channels
            scale_in[name] = scale_in.get(name, 1.0) * f
            scale_out[group.producer] = scale_out.get(group.producer, 1.0) * f
            for between in group.channelwise:
                scale_out[between] = scale_out.get(between, 1.0) * f
        macs = params = 0.0
        for cost in self.cost.layers:
            fin, fout = scale_in.get(cost.name, 1.0), scale_out.get(cost.name, 1.0)
            macs += cost.macs * fin * fout
            layer = self.layers.get(cost.name)
            bias = int(layer.bias.shape[0]) if getattr(layer, "bias", None) is not None else 0
            params += (cost.params - bias) * fin * fout + bias * fout
        return {"macs": round(macs), "params": round(params)}

    # sampled rows --------------------------------------------------------------------------------------------------
    def _positions(self, name):
        layer = self.layers[name]
        if _dense_like(layer):
            return None
        shape = layer.output.shape
        rng = np.random.default_rng([self.params.seed, list(self.groups).index(name)])
        return sample_positions(len(self.x), shape[1], shape[2], self.params.samples_per_image, rng)

    def rows(self, model, name, positions):
        """The inputs layer ``name`` of ``model`` reads at the sampled positions: patches, or input vectors."""
        layer = model.get_layer(name)
        features = keras.Model(model.inputs[0], tensors_in(model, layer))
        parts = [
            keras.ops.convert_to_numpy(features(self.x[i : i + 128], training=False))
            for i in range(0, len(self.x), 128)
        ]
        x = np.concatenate(parts)
        return x if positions is None else conv_patches(x, layer, positions)

    def prepare(self, name):
        """(positions, original input rows, original pre-activation outputs) of one layer; the last one cached."""
        if self._prepared[0] != name:
            layer = self.layers[name]
            positions = self._positions(name)
            rows = self.rows(self.model, name, positions)
            target = rows.astype(np.float64) @ kernel_matrix(np.asarray(layer.kernel)).astype(np.float64)
            if layer.use_bias:
                target += np.asarray(layer.bias)
            self._prepared = (name, (positions, rows, target))
        return self._prepared[1]

    # pruning -------------------------------------------------------------------------------------------------------
    def prune(self, state, name, keep_count, rows, target):
        """Prunes group ``name`` to ``keep_count`` channels in ``state``, choosing channels on ``rows`` (inputs as
        the pruned-so-far model gives them) and refitting against ``target``."""
        group, layer = self.groups[name], self.layers[name]
        kernel = np.asarray(layer.kernel)
        order = removal_order(channel_gram(rows, kernel, group.channels))
        keep = kept_channels(order, group.channels, keep_count)
        state.apply(group, keep)
        if not self.params.reconstruct:
            return
        bn = self._following_batchnorm(name)
        fit_intercept = layer.use_bias or bn is not None
        taps = kernel_matrix(kernel).shape[0] // group.channels
        weights, intercept = refit(
            rows[:, columns_of(keep, group.channels, taps)], target, self.params.ridge, fit_intercept
        )
        w = state.get(name)
        w["kernel"] = weights.reshape(w["kernel"].shape).astype(kernel.dtype)
        if layer.use_bias:
            w["bias"] = intercept.astype(kernel.dtype)
        elif bn is not None:  # no bias of its own: the BatchNorm right after absorbs the intercept
            moving = state.get(bn)
            moving["moving_mean"] = (moving["moving_mean"] - intercept).astype(kernel.dtype)

    def _following_batchnorm(self, name):
        node = next(n for n in self.info.nodes if n.operation is self.layers[name])
        nxt = self.info.sole_consumer(node)
        if (
            nxt is not None
            and isinstance(nxt.operation, layers.BatchNormalization)
            and nxt.operation.axis in (-1, len(nxt.input_tensors[0].shape) - 1)
        ):
            return nxt.operation.name
        return None

    def build(self, settings, final=False) -> keras.Model:
        state = WeightState(self.model)
        current = self.model
        for name in self.groups:  # graph order of the consumers
            if name not in settings:
                continue
            positions, rows, target = self.prepare(name)
            if final and state.weights:  # inputs as the model pruned so far gives them
                current = state.build()
                rows = self.rows(current, name, positions)
            self.prune(state, name, settings[name], rows, target)
        return state.build()


def channel_pruning(
    model, target_ratio, data, eval_fn=None, config: ChannelPruningConfig | dict | None = None, verbose=True, **kwargs
) -> CompressionResult:
    """Compresses a model to a fraction of its MACs (or parameters) by pruning input channels, refitting what remains.

    Candidate layers are those whose input channels can go (`find_groups`): removing a channel also removes the
    producing layer's output channel and that channel of the BatchNorm, activation, pooling or depthwise layers
    between. Each candidate is pruned alone at each candidate ratio and scored by ``eval_fn`` where given, else by the
    relative error of the model's outputs on ``data``; the ratios are then chosen greedily for the least predicted
    loss within the target (`select_ratios`). The final model is built layer by layer in graph order: channels are
    chosen by their contribution to the layer's output, and the kept weights refit by ridge regression on ``data``
    against the original model's outputs.

    Args:
        model: A trained Functional or Sequential model with a single input. Not changed.
        target_ratio: The fraction of the model's cost to keep (``config.cost_metric``: MACs by default),
            strictly between 0 and 1.
        data: Typical inputs, required: an array shaped like the model's input, an ``(x, y)`` pair or a
            ``tf.data.Dataset``. The refit samples its rows from them, and they score candidates without ``eval_fn``.
        eval_fn: ``eval_fn(model) -> float``, higher is better (for example accuracy on held-out data); the model it
            gets is not compiled. Called for the input model and for each candidate.
        config: A `ChannelPruningConfig` or a dict of its fields; default ``ChannelPruningConfig()``.
        verbose: Show a progress bar of the sensitivity analysis.
        **kwargs: Fields of `ChannelPruningConfig` (``multiple=8``, ``ridge=1e-2``, ...), each overriding
            ``config``'s.

    Returns:
        A `CompressionResult`: ``.model`` is a new plain Keras model with the same layer names;
        ``.layer_ratios``, ``.layer_settings`` (input channels kept), ``.achieved_ratio``, ``.mac_ratio``,
        ``.sensitivity`` and ``.summary()`` describe the choice.

    Raises:
        ValueError: If ``data`` is missing or does not fit the model's input, the model has several inputs,
            ``target_ratio`` is not strictly between 0 and 1, ``config.layers``/``exclude`` names a layer the
            model lacks, or a layer of a candidate group holds NaN or infinite weights.
        TypeError: If ``target_ratio`` is not a number, ``config`` is neither a `ChannelPruningConfig` nor a dict, a
            keyword is not one of its fields, or ``eval_fn`` is not callable.
        NothingToCompressError: If no layer's input channels can be pruned among those selected (residual adds and
            concatenations pin their channels), or the target cannot be reached with the candidate ratios.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        result = keras_eff.compression.channel_pruning(model, 0.5, x_train[:1000], eval_fn=eval_fn)
        print(result.summary())
        result.sensitivity.plot("sensitivity.png")
        ```
    """
    target_ratio = check_ratio(target_ratio)
    config = resolve_config(ChannelPruningConfig, config, kwargs, "channel_pruning")
    if data is None:
        raise ValueError("channel_pruning needs data: a few hundred typical inputs to refit the pruned layers on")
    return compress(ChannelPruningScheme(model, config, data), target_ratio, data, eval_fn, verbose)


__all__ = ["ChannelPruningScheme", "channel_pruning"]
