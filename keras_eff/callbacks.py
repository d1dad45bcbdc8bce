"""Callbacks for model.fit, gathered from every technique."""

from .pruning.callbacks import PruningSummary, UpdatePruning
from .quantization.callbacks import FreezeBatchNorm, FreezeRanges

__all__ = ["FreezeBatchNorm", "FreezeRanges", "PruningSummary", "UpdatePruning"]
