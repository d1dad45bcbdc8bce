"""The registry of layer facts (``facts_for``) and the protocol custom layers use to declare theirs.

A custom layer opts in either with a method::

    class ScaledDense(keras.layers.Layer):
        def keras_eff_facts(self):
            return keras_eff.LayerFacts(kernels={"kernel": "last"}, output_range="own", prunable=True,
                                        clusterable=True)

or, for a class you do not own, ``keras_eff.register_layer(TheirLayer, LayerFacts(...))``. See ``facts.py`` for the
fields and docs/layers.md for examples.
"""

from .facts import CHANNELS, LAYOUTS, OUTPUT_RANGES, LayerFacts, LayerFactsError
from .registry import (
    FIXED_RANGES,
    HARD_SWISH,
    PROTOCOL,
    UNKNOWN,
    activation_name,
    channel_shape,
    facts_for,
    is_known,
    kernel_layout,
    kernel_names,
    main_kernel,
    register_layer,
    registered_classes,
    unregister_layer,
)

__all__ = [
    "CHANNELS",
    "FIXED_RANGES",
    "HARD_SWISH",
    "LAYOUTS",
    "LayerFacts",
    "LayerFactsError",
    "OUTPUT_RANGES",
    "PROTOCOL",
    "UNKNOWN",
    "activation_name",
    "channel_shape",
    "facts_for",
    "is_known",
    "kernel_layout",
    "kernel_names",
    "main_kernel",
    "register_layer",
    "registered_classes",
    "unregister_layer",
]
