"""Errors shared across keras_eff."""


class UnsupportedModelError(TypeError):
    """A model whose structure a technique cannot handle (subclassed, unbuilt, ...)."""
