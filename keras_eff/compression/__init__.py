"""Compression to a MAC (or parameter) budget: spatial SVD and channel pruning, per-layer ratios chosen from
per-layer sensitivity. Each method returns a ``CompressionResult`` whose ``.model`` is a new plain Keras model."""

from .channel_groups import ChannelGroup, find_groups
from .channel_pruning import channel_pruning
from .inputs import NothingToCompressError
from .macs import LayerCost, ModelCost, count_macs
from .parameters import ChannelPruningParameters, CompressionParameters, SpatialSvdParameters
from .pipeline import CompressionResult
from .selection import SensitivityTable, measure_sensitivity, select_ratios
from .svd import spatial_svd, split_conv_kernel, split_dense_kernel

__all__ = ["ChannelGroup", "ChannelPruningParameters", "CompressionParameters", "CompressionResult", "LayerCost",
           "ModelCost", "NothingToCompressError", "SensitivityTable", "SpatialSvdParameters", "channel_pruning",
           "count_macs", "find_groups", "measure_sensitivity", "select_ratios", "spatial_svd", "split_conv_kernel",
           "split_dense_kernel"]
