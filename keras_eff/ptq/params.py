"""Deprecated: the PTQ options moved to ``keras_eff.ptq.config`` under ``…Config`` names (``AdaRoundParams`` is now
``AdaRoundConfig``, and so on). The old names answer here and in ``keras_eff.ptq`` for one release, with a
``DeprecationWarning``."""

from ..options import deprecated_aliases
from .config import AdaRoundConfig, AutoQuantConfig, BiasCorrectionConfig, EqualizeConfig

RENAMED = {
    "EqualizeParams": (EqualizeConfig, "keras_eff.ptq.EqualizeConfig"),
    "BiasCorrectionParams": (BiasCorrectionConfig, "keras_eff.ptq.BiasCorrectionConfig"),
    "AdaRoundParams": (AdaRoundConfig, "keras_eff.ptq.AdaRoundConfig"),
    "AutoQuantParams": (AutoQuantConfig, "keras_eff.ptq.AutoQuantConfig"),
}

__getattr__ = deprecated_aliases(__name__, RENAMED)

__all__: list = []
