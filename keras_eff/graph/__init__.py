"""Rewriting Keras graphs: clone with layers replaced or removed, fold BatchNorm, rewire. Serves every technique."""

from .batchnorm import bn_affine, fold_batchnorm, folded_weights, is_foldable_bn, output_channel_shape
from .channels import ChannelChain, ChannelGroup, channel_chains, channel_groups, channel_role
from .layers import activation_kind, call_with_values, describe_hidden, graph_layers, hidden_layers
from .rewrite import (
    GraphInfo,
    Rebuild,
    clone,
    clone_layer,
    copy_weights,
    functional_of,
    holds_state,
    layers_with,
    name_list,
    rebuild,
    refuse_rewritten,
    release,
    reuse_or_clone,
    tensors_in,
)

__all__ = [
    "ChannelChain",
    "ChannelGroup",
    "GraphInfo",
    "Rebuild",
    "activation_kind",
    "channel_chains",
    "channel_groups",
    "channel_role",
    "bn_affine",
    "call_with_values",
    "describe_hidden",
    "clone",
    "clone_layer",
    "copy_weights",
    "fold_batchnorm",
    "folded_weights",
    "functional_of",
    "graph_layers",
    "hidden_layers",
    "holds_state",
    "is_foldable_bn",
    "layers_with",
    "name_list",
    "refuse_rewritten",
    "output_channel_shape",
    "rebuild",
    "release",
    "reuse_or_clone",
    "tensors_in",
]
