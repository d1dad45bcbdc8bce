"""An activation that TFLite has no single int8 op for (softplus, mish, ELU, ...) as one layer: the chain of int8 ops
``activation_steps`` writes, with a range on every step. ``quantize_model`` puts it where a model has such an
activation; in a subclassed model, apply it after a wrapped layer yourself."""

from __future__ import annotations

import keras
import numpy as np

from . import activation_steps
from .composite import CompositeQuantized


def _steps(activation: str, params: dict):
    """The chain's steps in order, and the fixed range of those that have one: the chain run once on a constant."""
    names, fixed = [], {}

    def record(tensor, step, fixed_range=None, truncates=False):
        names.append(step)
        if fixed_range is not None:
            fixed[step] = fixed_range
        return tensor

    activation_steps.chain(activation, np.zeros((1, 1), np.float32), record, **params)
    return names, fixed


@keras.saving.register_keras_serializable(package="keras_eff")
class QuantizedActivation(CompositeQuantized):
    """An activation the converter splits into several ops, as a chain of int8 ops with a range after each.

    Args:
        activation: One of ``activation_steps.CHAINS``: ``"hard_sigmoid"``, ``"tanh_shrink"``, ``"softsign"``,
            ``"sparse_sigmoid"``, ``"elu"``, ``"celu"``, ``"selu"``, ``"softplus"``, ``"mish"``,
            ``"squareplus"``, ``"log_sigmoid"``, ``"soft_shrink"``, ``"sparse_plus"``, ``"hard_shrink"``.
        alpha: ELU's and CELU's α (None: Keras's default, 1.0); refused for the others.
        b: squareplus's b (None: Keras's default, 4); refused for the others.
        threshold: soft_shrink's and hard_shrink's threshold (None: Keras's default, 0.5); refused for the others.
        bits: Bits of every step's range.
        symmetric: Symmetric ranges.
        ema_decay: Decay of the moving averages that train the ranges.
        quantizers: The step quantizers, from a saved config (leave None).
        integer_kernels: Kept for ``set_integer_kernels``; the chain computes the same on every kernel set.
        **kwargs: Keras layer arguments (``name`` ...).

    Raises:
        ValueError: If ``activation`` has no chain, or a parameter is given for an activation without it.

    Example:
        ```python
        class Block(keras.Model):  # a subclassed model: the wrapper holds the dense layer, the chain its activation
            def __init__(self):
                super().__init__()
                self.dense = keras_eff.quantize(keras.layers.Dense(64))
                self.act = keras_eff.quantization.QuantizedActivation("mish")

            def call(self, x):
                return self.act(self.dense(x))
        ```
    """

    def __init__(
        self,
        activation,
        alpha=None,
        b=None,
        threshold=None,
        bits=8,
        symmetric=False,
        ema_decay=0.99,
        quantizers=None,
        integer_kernels="xnnpack",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in activation_steps.CHAINS:
            raise ValueError(
                f"QuantizedActivation: {activation!r} has no chain of int8 ops; the chains: "
                f"{', '.join(sorted(activation_steps.CHAINS))}"
            )
        if alpha is not None and activation not in ("elu", "celu"):
            raise ValueError(f"QuantizedActivation: alpha applies to 'elu' and 'celu', not to {activation!r}")
        if b is not None and activation != "squareplus":
            raise ValueError(f"QuantizedActivation: b applies to 'squareplus', not to {activation!r}")
        if threshold is not None and activation not in ("soft_shrink", "hard_shrink"):
            raise ValueError(
                f"QuantizedActivation: threshold applies to 'soft_shrink' and 'hard_shrink', not to {activation!r}"
            )
        self.activation = activation
        self.alpha = None if alpha is None else float(alpha)
        self.b = None if b is None else float(b)
        self.threshold = None if threshold is None else float(threshold)
        given = (("alpha", self.alpha), ("b", self.b), ("threshold", self.threshold))
        self._params = {k: v for k, v in given if v is not None}
        self._step_names, fixed = _steps(activation, self._params)
        self._init_activation_steps(
            self._step_names, bits, symmetric, ema_decay, quantizers, integer_kernels, fixed=fixed
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        q = dict(zip(self._step_names, self.step_quantizers))

        def on_grid(tensor, step, fixed_range=None, truncates=False):
            quantizer = q[step]
            if truncates and not (training or self._export_view or quantizer.calibrating):
                tensor = tensor - 0.5 * quantizer.tflite_scale()  # the int8 op truncates: the code below, not nearest
            return quantizer(tensor, training=training)

        return activation_steps.chain(self.activation, x, on_grid, **self._params)

    def get_config(self):
        return {
            **super().get_config(),
            "activation": self.activation,
            "alpha": self.alpha,
            "b": self.b,
            "threshold": self.threshold,
        }
