"""Post-training quantization: data-free equalization, bias correction, AdaRound, AutoQuant, analysis, encodings.

Each technique takes its options as ``config=`` (an ``…Config``, or a dict of its fields) and any field as a keyword
argument; each returns a new model and leaves its input unchanged; what it did is ``keras_eff.get_report(new_model,
kind)``.
"""

from ..options import deprecated_aliases as _deprecated_aliases
from .adaround import AdaRoundReport, adaround
from .analysis import divergence, plot_sensitivity, plot_weight_ranges, weight_ranges
from .auto_quant import AutoQuantResult, auto_quant
from .bias_correction import BiasCorrectionReport, bias_correction
from .config import AdaRoundConfig, AutoQuantConfig, BiasCorrectionConfig, EqualizeConfig
from .encodings import export_encodings
from .equalize import EqualizationReport, equalize
from .params import RENAMED as _RENAMED

__all__ = [
    "AdaRoundConfig",
    "AdaRoundReport",
    "AutoQuantConfig",
    "AutoQuantResult",
    "BiasCorrectionConfig",
    "BiasCorrectionReport",
    "EqualizationReport",
    "EqualizeConfig",
    "adaround",
    "auto_quant",
    "bias_correction",
    "divergence",
    "equalize",
    "export_encodings",
    "plot_sensitivity",
    "plot_weight_ranges",
    "weight_ranges",
]

# the names before the …Config convention: for one release, with a DeprecationWarning
__getattr__ = _deprecated_aliases(__name__, _RENAMED)
