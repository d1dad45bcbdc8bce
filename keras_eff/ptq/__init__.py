"""Post-training quantization: data-free equalization, bias correction, AdaRound, AutoQuant, analysis, encodings."""

from .adaround import AdaRoundReport, adaround
from .analysis import divergence, plot_sensitivity, plot_weight_ranges, weight_ranges
from .auto_quant import AutoQuantResult, auto_quant
from .bias_correction import BiasCorrectionReport, bias_correction
from .encodings import export_encodings
from .equalize import EqualizationReport, equalize
from .params import AdaRoundParams, AutoQuantParams, BiasCorrectionParams, EqualizeParams

__all__ = ["AdaRoundParams", "AdaRoundReport", "AutoQuantParams", "AutoQuantResult", "BiasCorrectionParams",
           "BiasCorrectionReport", "EqualizationReport", "EqualizeParams", "adaround", "auto_quant",
           "bias_correction", "divergence", "equalize", "export_encodings", "plot_sensitivity",
           "plot_weight_ranges", "weight_ranges"]
