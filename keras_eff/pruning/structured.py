"""What a pruning ``structure`` means and which layers it applies to.

- ``None``: unstructured magnitude pruning of the layer's kernel(s).
- ``"N:M"`` (e.g. ``"2:4"``): in every group of M consecutive input channels, the N largest weights are kept
  (fixed sparsity 1 − N/M; the mask is applied from the schedule's first step with a non-zero target).
- ``"channels"``: whole output channels (filters) are pruned; the BatchNorm γ/β and depthwise weights that carry a
  pruned channel are masked with it, channels joined by a residual Add are pruned together, and
  ``keras_eff.pruning.strip_channels`` removes them physically (see ``keras_eff/graph/channels.py``).
"""

from __future__ import annotations

import re

from keras import layers

from ..graph.channels import producer_problem
from ..layers import facts_for, kernel_names


def is_prunable(layer) -> bool:
    """Says whether magnitude pruning acts on a layer: the layer registry's ``prunable`` fact.

    Built in for Conv, DepthwiseConv, SeparableConv, Conv*Transpose, Dense and Embedding; custom layers declare it
    (``keras_eff_facts()`` or ``keras_eff.register_layer``, docs/layers.md).

    Args:
        layer: Any object; only Keras layers can be prunable.

    Returns:
        True where ``layer`` is a Keras layer with prunable kernels.

    Example:
        ```python
        [l.name for l in model.layers if keras_eff.pruning.is_prunable(l)]
        ```
    """
    return isinstance(layer, layers.Layer) and facts_for(layer).prunable


def depthwise_only(layer) -> bool:
    """Whether every kernel of ``layer`` is a depthwise kernel (what ``skip_depthwise`` leaves dense)."""
    layouts = set(facts_for(layer).kernels.values())
    return layouts == {"depthwise"}


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
    raise ValueError(
        f"unknown pruning structure {structure!r}: use None (unstructured), 'N:M' such as '2:4', or 'channels'"
    )


def format_structure(parsed) -> str | None:
    if parsed is None or parsed == "channels":
        return parsed
    return f"{parsed[1]}:{parsed[2]}"


def weight_names(layer) -> tuple:
    """Names of the weights unstructured pruning zeroes in ``layer``: its kernels in the registry."""
    return kernel_names(layer)


def prunable_weights(layer) -> dict:
    """{name: variable} of the `weight_names` ``layer`` holds (an unbuilt layer holds none)."""
    by_name = {w.path.split("/")[-1]: w for w in layer.weights}
    return {n: by_name[n] for n in weight_names(layer) if n in by_name}


def unprunable_reason(layer, structure=None) -> str | None:
    """Why ``layer`` cannot carry a mask of this structure (None: it can)."""
    parsed = parse_structure(structure)
    kind = type(layer).__name__
    if not is_prunable(layer):
        return (
            f"layer {layer.name!r} ({kind}) has no kernel pruning can act on; prunable layers are Conv, "
            f"DepthwiseConv, SeparableConv, Conv*Transpose, Dense and Embedding, and custom layers that declare "
            f"prunable kernels (keras_eff_facts() or keras_eff.layers.register_layer)"
        )
    if parsed is None:
        return None
    if parsed == "channels":
        # the instance conditions (groups, data_format) are the channel analysis's; f(0) = 0 is checked there too
        return producer_problem(layer, constant_ok=True)
    _, n, m = parsed
    if facts_for(layer).channels != "produce":  # a kernel (..., c_in, c_out): Conv and Dense
        return (
            f"layer {layer.name!r} ({kind}): {n}:{m} pruning groups the input channels of Conv and Dense "
            f"kernels; {kind} has none to group"
        )
    if getattr(layer, "groups", 1) != 1:
        return f"layer {layer.name!r} is a grouped convolution; {n}:{m} pruning needs groups=1"
    if layer.built:
        weights = {w.path.split("/")[-1]: w for w in layer.weights}
        cin = weights[kernel_names(layer)[-1]].shape[-2]
        if cin % m:
            return (
                f"layer {layer.name!r} has {cin} input channels, not a multiple of {m}, so its kernel cannot "
                f"be split into groups of {m} for {n}:{m} pruning"
            )
    return None
