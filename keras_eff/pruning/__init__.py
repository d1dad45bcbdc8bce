"""Pruning: schedules, per-layer sparsity distributions, unstructured / N:M / channel pruning, strip and report.

pruned = keras_eff.prune_model(model, PolynomialDecay(0.0, 0.8, 0, 2000), distribution="log")
pruned.compile(...); pruned.fit(x, y, callbacks=[UpdatePruning(), PruningSummary()])
final = keras_eff.strip(pruned)                      # plain Keras model, zeros in its kernels
small = keras_eff.strip(pruned_channels, remove_pruned_channels=True)   # filters physically removed
"""

from ..graph.channels import ChannelGroup, channel_groups
from ..strip import strip
from .callbacks import PruningSummary, UpdatePruning, layer_sparsities
from .distribution import log_proportional, uniform
from .model import PruningConfig, prune_model
from .report import SparsityReport, sparsity_report
from .schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from .strip_channels import kept_channels, remove_channels, strip_channels
from .structured import is_prunable
from .wrapper import PruneWrapper, prune

__all__ = [
    "ChannelGroup",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruneWrapper",
    "PruningConfig",
    "PruningSchedule",
    "PruningSummary",
    "SparsityReport",
    "UpdatePruning",
    "channel_groups",
    "is_prunable",
    "kept_channels",
    "layer_sparsities",
    "log_proportional",
    "prune",
    "prune_model",
    "remove_channels",
    "sparsity_report",
    "strip",
    "strip_channels",
    "uniform",
]
