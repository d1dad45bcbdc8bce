"""Callbacks for model.fit, gathered from every technique."""

from .quantization.callbacks import FreezeBatchNorm, FreezeRanges

__all__ = ["FreezeBatchNorm", "FreezeRanges"]
