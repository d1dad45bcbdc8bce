"""Compression to a MAC (or parameter) budget: spatial SVD and channel pruning, per-layer ratios chosen from
per-layer sensitivity. Each method returns a ``CompressionResult`` whose ``.model`` is a new plain Keras model."""

from ..options import deprecated_aliases as _deprecated_aliases
from .channel_groups import ChannelGroup, find_groups
from .channel_pruning import channel_pruning
from .config import ChannelPruningConfig, CompressionConfig, SpatialSvdConfig
from .inputs import NothingToCompressError
from .macs import LayerCost, ModelCost, count_macs
from .parameters import RENAMED as _RENAMED
from .pipeline import CompressionResult
from .selection import SensitivityTable, measure_sensitivity, select_ratios
from .svd import spatial_svd, split_conv_kernel, split_dense_kernel

__all__ = [
    "ChannelGroup",
    "ChannelPruningConfig",
    "CompressionConfig",
    "CompressionResult",
    "LayerCost",
    "ModelCost",
    "NothingToCompressError",
    "SensitivityTable",
    "SpatialSvdConfig",
    "channel_pruning",
    "count_macs",
    "find_groups",
    "measure_sensitivity",
    "select_ratios",
    "spatial_svd",
    "split_conv_kernel",
    "split_dense_kernel",
]

# the names before the …Config convention: for one release, with a DeprecationWarning
__getattr__ = _deprecated_aliases(__name__, _RENAMED)
