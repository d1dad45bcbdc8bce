"""Physical removal of pruned channels: filters go, and with them the matching channels of the BatchNorm and
depthwise layers after them and the matching inputs of the next Conv/Dense (through pooling, Add, Flatten and
Concatenate). The stripped model computes the same outputs as the masked one, with fewer parameters.

The removal itself is a graph rewrite on the channel roles (``keras_eff.graph.remove_channels``); ``keras_eff.strip``
drives it from each ``PruneWrapper.kept_channels()``. This module imports ``strip``; ``strip`` does not import it.
"""

from __future__ import annotations

import keras

from ..graph.channels import remove_channels
from ..strip import kept_channels as _kept_by_hook
from ..strip import strip


def kept_channels(model) -> dict:
    """Says which output channels each channel-pruned layer of a model keeps, from its channel masks.

    Args:
        model: A model pruned with ``structure="channels"`` (nested models included). Not changed.

    Returns:
        ``{producer layer name: numpy array of the kept channels' indices}``; empty for a model without
        channel-pruned layers.
    """
    return _kept_by_hook(model)


def strip_channels(model) -> keras.Model:
    """Strips a channel-pruned model and removes its pruned channels: ``keras_eff.strip(model, True)``.

    Filters go, and with them the matching channels of the BatchNorm and depthwise layers after them and the matching
    inputs of the next layers; the result has fewer parameters and the same outputs.

    Args:
        model: A model pruned with ``structure="channels"`` (and trained). Not changed.

    Returns:
        A new plain Keras model without the pruned channels.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
        ValueError: If pruned channels reach a layer that cannot drop them, or a merge whose inputs keep different
            channels.

    Example:
        ```python
        small = keras_eff.pruning.strip_channels(pruned)
        ```
    """
    return strip(model, remove_pruned_channels=True)


__all__ = ["kept_channels", "remove_channels", "strip_channels"]
