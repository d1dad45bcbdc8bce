"""Deprecated: the compression options moved to ``keras_eff.compression.config`` under ``…Config`` names
(``SpatialSvdParameters`` is now ``SpatialSvdConfig``, and so on). The old names answer here and in
``keras_eff.compression`` for one release, with a ``DeprecationWarning``."""

from ..options import deprecated_aliases
from .config import DEFAULT_RATIOS, ChannelPruningConfig, CompressionConfig, SpatialSvdConfig

RENAMED = {
    "CompressionParameters": (CompressionConfig, "keras_eff.compression.CompressionConfig"),
    "SpatialSvdParameters": (SpatialSvdConfig, "keras_eff.compression.SpatialSvdConfig"),
    "ChannelPruningParameters": (ChannelPruningConfig, "keras_eff.compression.ChannelPruningConfig"),
}

__getattr__ = deprecated_aliases(__name__, RENAMED)

__all__ = ["DEFAULT_RATIOS"]
