"""The soft-distillation loss shared by DONNA's stage B finetuning and stage D training.

``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels, student)`` (Hinton et
al.): the reference model's logits softened by the temperature ``T``, plus cross-entropy on the labels.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["DistillationLoss", "check_distillation_options", "pack_targets", "teacher_logits_for"]


def check_distillation_options(owner: str, temperature, alpha) -> None:
    """Refuses a ``temperature`` that is not positive or an ``alpha`` outside [0, 1], naming ``owner`` (the class)
    and the field: the one check of the loss and of the configs that build it."""
    if not temperature > 0:
        raise ValueError(f"{owner}.temperature: {temperature} must be positive")
    if not 0 <= alpha <= 1:
        raise ValueError(f"{owner}.alpha: {alpha} must lie in [0, 1]")


@keras.saving.register_keras_serializable(package="keras_eff")
class DistillationLoss(keras.losses.Loss):
    """Soft distillation plus cross-entropy, as a Keras loss.

    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels, student)``.
    ``y_true`` packs the label in column 0 and the teacher's logits after it (:func:`pack_targets`); ``y_pred`` are
    the student's logits. Registered as a Keras serializable: a model compiled with it saves and loads without
    ``custom_objects``.

    Args:
        temperature: ``T``, the softening temperature; positive.
        alpha: The weight of the distillation term, in [0, 1] (1: distillation only, 0: cross-entropy only).
        name: The loss's name.
        **kwargs: Passed to `keras.losses.Loss` (``reduction``, ``dtype``).

    Raises:
        ValueError: If ``temperature`` is not positive or ``alpha`` is outside [0, 1].

    Example:
        ```python
        from keras_eff.donna.distill import pack_targets

        student.compile(optimizer="adam", loss=DistillationLoss(temperature=4.0, alpha=0.5))
        student.fit(x, pack_targets(y, teacher.predict(x)), epochs=3)
        ```
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, name: str = "distillation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check_distillation_options(type(self).__name__, temperature, alpha)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = ops.cast(y_true[:, 1:], y_pred.dtype)
        t = self.temperature
        ce = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        log_pt = ops.log_softmax(teacher / t, axis=-1)
        log_ps = ops.log_softmax(y_pred / t, axis=-1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1) * (t * t)
        return self.alpha * kl + (1.0 - self.alpha) * ce

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


def pack_targets(labels, teacher_logits) -> np.ndarray:
    """``[label, teacher logits...]`` per sample, the ``y_true`` of :class:`DistillationLoss`."""
    labels = np.asarray(labels).reshape(-1, 1).astype(np.float32)
    return np.concatenate([labels, np.asarray(teacher_logits, np.float32)], axis=1)


def teacher_logits_for(x, num_classes: int, reference=None, teacher_logits=None) -> np.ndarray | None:
    """The teacher's logits on ``x``: ``teacher_logits`` as float32, checked to be ``(len(x), num_classes)``, else
    ``reference``'s predictions on ``x``; None when neither is given.

    Raises:
        ValueError: If ``teacher_logits`` has another shape (the message gives both).
    """
    if teacher_logits is None and reference is not None:
        teacher_logits = reference.predict(x, batch_size=512, verbose=0)
    if teacher_logits is None:
        return None
    teacher_logits = np.asarray(teacher_logits, np.float32)
    if teacher_logits.shape != (len(x), num_classes):
        raise ValueError(f"teacher_logits: shape {teacher_logits.shape}, expected ({len(x)}, {num_classes})")
    return teacher_logits
