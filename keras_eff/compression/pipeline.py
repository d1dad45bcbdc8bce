"""The steps every method shares: check the inputs, measure per-layer sensitivity, choose per-layer ratios for the
target, build the compressed model, count what it costs. A method supplies a ``Scheme``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import keras
import numpy as np

from ..graph import functional_of, release
from ..options import warn_deprecated
from .inputs import check_names, check_ratio, sample_array
from .macs import ModelCost, count_macs
from .selection import SensitivityTable, measure_sensitivity, select_ratios


class Scheme(ABC):
    """What a method knows: its candidate layers, the setting (rank, kept channels) a ratio gives a layer, the cost
    of a set of settings, and how to build the model for them. Subclasses fill these in."""

    method = ""

    def __init__(self, model, params, data=None):
        self.model = model
        self.params = params
        self.data = data
        self.cost = count_macs(model)
        self.layer_cost = self.cost.by_name()

    @abstractmethod
    def candidates(self) -> list:
        """Names of the layers this method will consider, in graph order (raises where there are none)."""

    @abstractmethod
    def setting_of(self, name, ratio):
        """The layer setting (rank, kept channels) that keeps about ``ratio`` of the layer's cost, or None."""

    @abstractmethod
    def cost_of(self, settings) -> dict:
        """``{"macs": ..., "params": ...}`` of the whole model with ``settings`` ({layer: setting}) applied."""

    @abstractmethod
    def build(self, settings, final=False) -> keras.Model:
        """A new model with ``settings`` applied (``final``: the model returned to the user)."""

    def weight_error(self, name, setting):
        """A data-free loss proxy for one layer, or None where the method has none."""
        return None

    def chosen(self, names) -> list:
        """Applies the ``layers``/``exclude`` options to the method's eligible layer names."""
        check_names(self.model, self.params.layers, "config.layers")
        check_names(self.model, self.params.exclude, "config.exclude")
        if self.params.layers is not None:
            names = [n for n in names if n in self.params.layers]
        return [n for n in names if n not in self.params.exclude]


@dataclass
class CompressionResult:
    """What `spatial_svd` and `channel_pruning` return: the compressed model and how it was chosen.

    Attributes:
        model: The compressed model, a new plain Keras (Functional) model; the input model is untouched.
        method: ``"spatial_svd"`` or ``"channel_pruning"``.
        target_ratio: The fraction of the cost asked for.
        cost_metric: ``"macs"`` or ``"params"``: what the ratios count.
        layer_ratios: ``{layer name: ratio}`` for every compressed layer (the fraction of that layer's cost kept).
        layer_settings: ``{layer name: setting}``: the SVD rank, or the number of input channels kept.
        original_cost: The input model's `ModelCost`.
        compressed_cost: The compressed model's `ModelCost`.
        sensitivity: The `SensitivityTable` the ratios were chosen from.
        config: The method's options (`SpatialSvdConfig` or `ChannelPruningConfig`).
    """

    model: keras.Model
    method: str
    target_ratio: float
    cost_metric: str
    layer_ratios: dict
    layer_settings: dict
    original_cost: ModelCost
    compressed_cost: ModelCost
    sensitivity: SensitivityTable
    config: object

    @property
    def parameters(self):
        """Deprecated: the old name of ``config`` (for one release, with a DeprecationWarning)."""
        warn_deprecated("CompressionResult.parameters", "CompressionResult.config")
        return self.config

    @property
    def achieved_ratio(self) -> float:
        """Cost of the compressed model over the original's, in ``cost_metric``."""
        return self.compressed_cost.total(self.cost_metric) / self.original_cost.total(self.cost_metric)

    @property
    def mac_ratio(self) -> float:
        """MACs of the compressed model over the original's."""
        return self.compressed_cost.total_macs / self.original_cost.total_macs

    @property
    def param_ratio(self) -> float:
        """Parameters of the compressed model over the original's."""
        return self.compressed_cost.total_params / self.original_cost.total_params

    def as_rows(self) -> list:
        """Lists the compressed layers as table rows.

        Returns:
            ``[{"layer": name, "ratio": ratio, "setting": setting}, ...]``.
        """
        return [{"layer": n, "ratio": r, "setting": self.layer_settings[n]} for n, r in self.layer_ratios.items()]

    def summary(self) -> str:
        """Describes the result in a few lines: target and achieved ratio, MACs and parameters before and after,
        and each layer's ratio and setting.

        Returns:
            The text.
        """
        summary = (
            f"{self.method}: target {self.target_ratio:.3g} of {self.cost_metric}, achieved "
            f"{self.achieved_ratio:.3f} (MACs {self.original_cost.total_macs:,} -> "
            f"{self.compressed_cost.total_macs:,}, params {self.original_cost.total_params:,} -> "
            f"{self.compressed_cost.total_params:,})"
        )
        lines = [summary]
        lines += [f"  {n}: ratio {r:.2f}, setting {self.layer_settings[n]}" for n, r in self.layer_ratios.items()]
        return "\n".join(lines)


def output_error(model, x, reference, batch_size=256) -> float:
    """Relative squared error of ``model``'s outputs against ``reference`` outputs on ``x``."""
    out = predict(model, x, batch_size)
    return float(np.sum((out - reference) ** 2) / max(np.sum(reference**2), 1e-30))


def predict(model, x, batch_size=256) -> np.ndarray:
    parts = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


def _scored(candidate, score):
    """``score(candidate)``, then the candidate unhooked from the layers it shares with the user's model, so that
    the candidates scored one after another do not stay alive with it (``keras_eff.graph.release``)."""
    try:
        return score(candidate)
    finally:
        release(candidate)


def compress(scheme: Scheme, target_ratio, data=None, eval_fn=None, verbose=True) -> CompressionResult:
    """Runs a method end to end; see ``spatial_svd`` and ``channel_pruning`` for the meaning of the arguments."""
    target_ratio = check_ratio(target_ratio)
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(
            f"eval_fn must be a callable taking a Keras model and returning a score, got {type(eval_fn).__name__}"
        )
    model, params = scheme.model, scheme.params
    functional_of(model)
    names = scheme.candidates()
    metric = params.cost_metric
    target = target_ratio * scheme.cost.total(metric)

    if eval_fn is not None:
        baseline, higher, label = float(eval_fn(model)), True, "eval_fn score"

        def score_of(name, setting):
            return _scored(scheme.build({name: setting}), eval_fn)
    elif data is not None:
        x_eval = sample_array(model, data, params.num_eval_samples)
        reference = predict(model, x_eval)
        baseline, higher, label = 0.0, False, "relative output error"

        def score_of(name, setting):
            return _scored(scheme.build({name: setting}), lambda m: output_error(m, x_eval, reference))
    else:
        baseline, higher, label = 0.0, False, "relative weight error"
        score_of = scheme.weight_error

    table = measure_sensitivity(
        names, params.candidate_ratios, scheme.setting_of, score_of, baseline, label, higher, verbose
    )
    ratios = select_ratios(table, lambda settings: scheme.cost_of(settings)[metric], target)
    settings = {n: table.settings[n][r] for n, r in ratios.items()}
    new = scheme.build(settings, final=True)
    return CompressionResult(
        new, scheme.method, target_ratio, metric, ratios, settings, scheme.cost, count_macs(new), table, params
    )


__all__ = ["CompressionResult", "Scheme", "compress", "output_error", "predict"]
