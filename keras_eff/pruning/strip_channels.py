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
    """{producer layer name: indices of the output channels kept} from the channel masks of a pruned model."""
    return _kept_by_hook(model)


def strip_channels(model) -> keras.Model:
    """``keras_eff.strip(model)`` and then the pruned channels removed physically (``remove_channels``)."""
    return strip(model, remove_pruned_channels=True)


__all__ = ["kept_channels", "remove_channels", "strip_channels"]
