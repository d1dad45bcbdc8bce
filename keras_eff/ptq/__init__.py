"""Post-training quantization: data-free equalization, bias correction, AdaRound, AutoQuant and analysis."""

from .equalize import EqualizationReport, equalize
from .params import AdaRoundParams, AutoQuantParams, BiasCorrectionParams, EqualizeParams

__all__ = ["AdaRoundParams", "AutoQuantParams", "BiasCorrectionParams", "EqualizationReport", "EqualizeParams",
           "equalize"]
