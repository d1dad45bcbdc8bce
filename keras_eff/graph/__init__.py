"""Rewriting Keras graphs: clone with layers replaced or removed, fold BatchNorm, rewire. Serves every technique."""

from .batchnorm import bn_affine, fold_batchnorm, folded_weights, is_foldable_bn, kernel_name, output_channel_shape
from .rewrite import GraphInfo, Rebuild, clone, clone_layer, copy_weights, functional_of, rebuild

__all__ = ["GraphInfo", "Rebuild", "bn_affine", "clone", "clone_layer", "copy_weights", "fold_batchnorm",
           "folded_weights", "functional_of", "is_foldable_bn", "kernel_name", "output_channel_shape", "rebuild"]
