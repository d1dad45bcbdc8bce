"""What a pruning ``structure`` means and which layers it applies to.

- ``None``: unstructured magnitude pruning of the layer's kernel(s).
- ``"N:M"`` (e.g. ``"2:4"``): in every group of M consecutive input channels, the N largest weights are kept
  (fixed sparsity 1 − N/M; the mask is applied from the schedule's first step with a non-zero target).
- ``"channels"``: whole output channels (filters) are pruned; the BatchNorm γ/β and depthwise weights that carry a
  pruned channel are masked with it, channels joined by a residual Add are pruned together, and
  ``keras_eff.pruning.strip_channels`` removes them physically (see ``channels.py``).
"""

from __future__ import annotations

import re

from keras import layers

# Layers whose kernels magnitude pruning acts on, and the weights it prunes.
_KERNELS = {layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
            layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel")}
PRUNABLE = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Conv1DTranspose, layers.Conv2DTranspose,
            layers.Conv3DTranspose, layers.DepthwiseConv1D, layers.DepthwiseConv2D, layers.SeparableConv1D,
            layers.SeparableConv2D, layers.Dense, layers.Embedding)
# Layers whose output channels can be pruned as filters (producers in channels.py).
CHANNEL_PRODUCERS = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Dense)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_TRANSPOSED = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)


def parse_structure(structure):
    """``None``, ``("nm", n, m)`` or ``"channels"``; a clear error for anything else."""
    if isinstance(structure, tuple) and len(structure) == 3 and structure[0] == "nm":
        return structure
    if structure is None or structure == "unstructured":
        return None
    if structure in ("channels", "filters", "channel"):
        return "channels"
    if isinstance(structure, str):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", structure)
        if match:
            n, m = int(match.group(1)), int(match.group(2))
            if not 0 < n < m:
                raise ValueError(f"structure {structure!r}: N:M needs 0 < N < M (keep N of every M weights)")
            return ("nm", n, m)
    raise ValueError(f"unknown pruning structure {structure!r}: use None (unstructured), 'N:M' such as '2:4', or "
                     f"'channels'")


def format_structure(parsed) -> str | None:
    if parsed is None or parsed == "channels":
        return parsed
    return f"{parsed[1]}:{parsed[2]}"


def weight_names(layer) -> tuple:
    """Names of the weights unstructured pruning zeroes in ``layer``."""
    for cls, names in _KERNELS.items():
        if isinstance(layer, cls):
            return names
    return ("embeddings",) if isinstance(layer, layers.Embedding) else ("kernel",)


def unprunable_reason(layer, structure=None) -> str | None:
    """Why ``layer`` cannot carry a mask of this structure (None: it can)."""
    parsed = parse_structure(structure)
    kind = type(layer).__name__
    if not isinstance(layer, PRUNABLE):
        return (f"layer {layer.name!r} ({kind}) has no kernel pruning can act on; prunable layers are Conv, "
                f"DepthwiseConv, SeparableConv, Conv*Transpose, Dense and Embedding")
    if parsed is None:
        return None
    if parsed == "channels":
        if not isinstance(layer, CHANNEL_PRODUCERS):
            return (f"layer {layer.name!r} ({kind}) cannot have its output channels pruned; channel pruning "
                    f"acts on Conv1D/2D/3D and Dense (depthwise channels follow the layer before them)")
        if getattr(layer, "groups", 1) != 1:
            return f"layer {layer.name!r} is a grouped convolution (groups={layer.groups}); channel pruning needs groups=1"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return f"layer {layer.name!r} is channels_first; channel pruning needs channels_last"
        return None
    _, n, m = parsed
    if isinstance(layer, _DEPTHWISE + _TRANSPOSED + _SEPARABLE) or isinstance(layer, layers.Embedding):
        return (f"layer {layer.name!r} ({kind}): {n}:{m} pruning groups the input channels of Conv and Dense "
                f"kernels; {kind} has none to group")
    if getattr(layer, "groups", 1) != 1:
        return f"layer {layer.name!r} is a grouped convolution; {n}:{m} pruning needs groups=1"
    if layer.built:
        cin = layer.kernel.shape[-2]
        if cin % m:
            return (f"layer {layer.name!r} has {cin} input channels, not a multiple of {m}, so its kernel cannot "
                    f"be split into groups of {m} for {n}:{m} pruning")
    return None
