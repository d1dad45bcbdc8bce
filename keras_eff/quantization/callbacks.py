"""Callbacks for quantization-aware training with model.fit: freeze BatchNorm statistics, freeze ranges."""

from __future__ import annotations

import keras

from ..distribute import check_same_scope
from .quantizers import ActivationQuantizer
from .wrapper import QuantizeWrapper


class _FreezeAt(keras.callbacks.Callback):
    """Freezes something once training reaches ``epoch`` (0-based, at its start) or ``step`` (global batches)."""

    what = "state"

    def __init__(self, epoch: int | None = None, step: int | None = None, verbose: int = 0):
        super().__init__()
        if (epoch is None) == (step is None):
            raise ValueError(f"{type(self).__name__} needs exactly one of epoch= or step=")
        for name, value in (("epoch", epoch), ("step", step)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{type(self).__name__}: {name}={value!r} must be a non-negative integer")
        self.epoch, self.step, self.verbose = epoch, step, verbose
        self._seen = 0
        self.frozen_at = None

    def _targets(self, layer) -> list:
        """The 0/1 flag variables of ``layer`` that this callback sets; each subclass names its own."""
        return []

    def _freeze(self, where):
        if self.frozen_at is not None:
            return
        count = 0
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            for variable in self._targets(layer):
                variable.assign(1.0)
                count += 1
        self.frozen_at = where
        self._retrace()
        if self.verbose:
            print(f"{type(self).__name__}: froze {count} {self.what} at {where}")

    def _retrace(self):
        """Nothing here; FreezeBatchNorm retraces the training step (its branch is chosen at trace time)."""

    def on_train_begin(self, logs=None):
        check_same_scope(self.model)  # a model and optimizer from different tf.distribute scopes cannot train
        self._seen = 0
        if self.step == 0 or self.epoch == 0:
            self._freeze("the start")

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch is not None and epoch >= self.epoch:
            self._freeze(f"epoch {epoch}")

    def on_train_batch_begin(self, batch, logs=None):
        if self.step is not None and self._seen >= self.step:
            self._freeze(f"step {self._seen}")
        self._seen += 1

    def get_config(self):
        return {"epoch": self.epoch, "step": self.step, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_eff")
class FreezeBatchNorm(_FreezeAt):
    """Stops updating the BatchNorm statistics folded into quantized layers, at an epoch or a step of ``fit``.

    From then on training folds the moving statistics into the kernels, exactly as the int8 file will hold them
    (BN folding trains best with statistics frozen for the last epochs). The flags (``bn_frozen`` of each
    `QuantizeWrapper` with a folded BatchNorm) are saved with the model and are set once; nothing unfreezes them.
    The training step is traced again when the flags are set (the branch is chosen at trace time). Give
    exactly one of ``epoch`` and ``step``.

    Args:
        epoch: Freeze at the start of this epoch (0-based; 0 freezes before the first step).
        step: Freeze before this many training batches have run (counted from the start of this ``fit``).
        verbose: Print how many layers were frozen, and when.

    Attributes:
        frozen_at: Where the statistics were frozen (``"the start"``, ``"epoch 3"``, ``"step 500"``); None until then.

    Raises:
        ValueError: If neither or both of ``epoch`` and ``step`` are given, or one is not a non-negative integer.

    Example:
        ```python
        qat.fit(x, y, epochs=4, callbacks=[keras_eff.callbacks.FreezeBatchNorm(epoch=3),
                                           keras_eff.callbacks.FreezeRanges(epoch=3)])
        ```
    """

    what = "BatchNorm statistics"

    def _retrace(self):
        # A wrapper picks its live / frozen BatchNorm branch when the step is traced (no tf.cond holding both): the
        # next step must be traced again with the flags set.
        if self.model.train_function is not None:
            self.model.make_train_function(force=True)

    def _targets(self, layer):
        if isinstance(layer, QuantizeWrapper) and layer.batchnorm is not None:
            return [layer.bn_frozen]
        return []


@keras.saving.register_keras_serializable(package="keras_eff")
class FreezeRanges(_FreezeAt):
    """Stops the moving-average updates of activation ranges at an epoch or a step of ``fit``.

    The last steps then train on fixed grids. Sets each `ActivationQuantizer`'s ``ranges_frozen`` flag, saved with the
    model; nothing unfreezes it. Ranges trained by gradient (``trainable_range=True``) and fixed ranges are not
    affected. Give exactly one of ``epoch`` and ``step``.

    Args:
        epoch: Freeze at the start of this epoch (0-based; 0 freezes before the first step).
        step: Freeze before this many training batches have run (counted from the start of this ``fit``).
        verbose: Print how many ranges were frozen, and when.

    Attributes:
        frozen_at: Where the ranges were frozen (``"the start"``, ``"epoch 3"``, ``"step 500"``); None until then.

    Raises:
        ValueError: If neither or both of ``epoch`` and ``step`` are given, or one is not a non-negative integer.

    Example:
        ```python
        qat.fit(x, y, epochs=4, callbacks=[keras_eff.callbacks.FreezeRanges(step=3000)])
        ```
    """

    what = "activation ranges"

    def _targets(self, layer):
        return [layer.ranges_frozen] if isinstance(layer, ActivationQuantizer) else []
