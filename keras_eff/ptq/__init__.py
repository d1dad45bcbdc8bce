"""Post-training quantization: data-free equalization, bias correction, AdaRound, AutoQuant and analysis."""

from .adaround import AdaRoundReport, adaround
from .bias_correction import BiasCorrectionReport, bias_correction
from .equalize import EqualizationReport, equalize
from .params import AdaRoundParams, AutoQuantParams, BiasCorrectionParams, EqualizeParams

__all__ = ["AdaRoundParams", "AdaRoundReport", "AutoQuantParams", "BiasCorrectionParams", "BiasCorrectionReport",
           "EqualizationReport", "EqualizeParams", "adaround", "bias_correction", "equalize"]
