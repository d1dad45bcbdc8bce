"""Pruning schedules: how sparse a layer should be at a training step, and at which steps its mask is updated.

A schedule is a small serializable object. ``sparsity_at(step)`` is the target sparsity after ``step`` optimizer
steps; ``should_update(step)`` says whether masks are recomputed at that step. Masks change only at update steps,
so between two of them a layer's mask is fixed.
"""

from __future__ import annotations

import abc
import math

import keras


def _check_sparsity(name, value, allow_zero=True):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not math.isfinite(value) or value < 0 or value >= 1 or (not allow_zero and value == 0):
        low = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must lie in {low} (a fraction of weights set to zero), got {value}")
    return value


def _check_step(name, value, minimum=0):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int,))
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise TypeError(f"{name} must be an integer step, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class PruningSchedule(abc.ABC):
    """The base class of pruning schedules: the target sparsity at each training step, and when masks update.

    Subclasses define ``sparsity_at``, ``should_update``, ``target``, ``with_target`` and ``get_config`` (the
    constructor's arguments). Schedules compare equal when their type and config are equal.

    Attributes:
        end_step: The step after which the sparsity no longer changes; None: it never settles.
    """

    #: the step after which the sparsity no longer changes (None: never settles)
    end_step = None

    def __call__(self, step: int):
        """Answers both questions at once, as TF-MOT's schedules do.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            ``(should_update(step), sparsity_at(step))``.
        """
        return self.should_update(step), self.sparsity_at(step)

    @property
    @abc.abstractmethod
    def target(self) -> float:
        """The sparsity the schedule ends at (what per-layer distributions share out)."""

    @abc.abstractmethod
    def sparsity_at(self, step: int) -> float:
        """The target sparsity after a number of optimizer steps.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            The fraction of weights to set to zero, in [0, 1).
        """

    @abc.abstractmethod
    def should_update(self, step: int) -> bool:
        """Whether masks are recomputed at a step (``UpdatePruning`` asks before each training batch).

        Args:
            step: The number of optimizer steps taken.

        Returns:
            True at the schedule's update steps.
        """

    @abc.abstractmethod
    def with_target(self, sparsity: float) -> PruningSchedule:
        """Makes the same schedule with another final sparsity (per-layer distributions use this).

        Args:
            sparsity: The new final sparsity, in [0, 1).

        Returns:
            A new schedule of the same type; this one is not changed.
        """

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The constructor arguments, for saving.

        Returns:
            A dict of the constructor's keyword arguments.
        """

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_eff")
class PolynomialDecay(PruningSchedule):
    """A sparsity rising from ``initial_sparsity`` to ``final_sparsity`` between ``begin_step`` and ``end_step``.

    The sparsity at step t, between the two steps, is

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** power

    Masks are updated every ``frequency`` steps from ``begin_step`` and once more at ``end_step`` whatever the
    frequency, so the final sparsity is always reached (TF-MOT skipped it when ``end_step`` was off the grid).
    Keras-serializable.

    Args:
        initial_sparsity: The sparsity up to ``begin_step``, in [0, 1).
        final_sparsity: The sparsity from ``end_step`` on, in [0, 1), at least ``initial_sparsity``.
        begin_step: The optimizer step pruning starts at.
        end_step: The step the final sparsity is reached at, after ``begin_step``.
        power: The exponent of the curve, positive (3: fast at first, then slower).
        frequency: Steps between two mask updates, at least 1.

    Raises:
        ValueError: If a sparsity lies outside [0, 1), ``initial_sparsity`` exceeds ``final_sparsity``,
            ``end_step`` is not after ``begin_step``, a step is negative, ``power`` is not positive or ``frequency``
            is below 1.
        TypeError: If a sparsity is not a number or a step not an integer.

    Example:
        ```python
        schedule = keras_eff.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=steps_per_epoch * 4, frequency=50)
        ```
    """

    def __init__(self, initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=1000, power=3, frequency=100):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step = _check_step("begin_step", begin_step)
        self.end_step = _check_step("end_step", end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be greater than begin_step ({self.begin_step})")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity "
                f"({self.final_sparsity}): pruning only removes weights"
            )
        power = float(power)
        if not math.isfinite(power) or power <= 0:
            raise ValueError(f"power must be a positive number, got {power}")
        self.power = power
        self.frequency = _check_step("frequency", frequency, minimum=1)

    @property
    def target(self):
        """The sparsity the schedule ends at: ``final_sparsity``."""
        return self.final_sparsity

    def sparsity_at(self, step):
        """The target sparsity after a number of optimizer steps, on the polynomial curve.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            ``initial_sparsity`` up to ``begin_step``, ``final_sparsity`` from ``end_step`` on, the curve between.
        """
        if step <= self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power

    def should_update(self, step):
        """Whether masks are recomputed at a step: every ``frequency`` steps from ``begin_step``, and at ``end_step``.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            True at ``begin_step + k·frequency`` before ``end_step``, and at ``end_step``.
        """
        if step == self.end_step:
            return True
        return self.begin_step <= step < self.end_step and (step - self.begin_step) % self.frequency == 0

    def with_target(self, sparsity):
        """Makes the same schedule with another final sparsity, the initial one scaled in proportion.

        Args:
            sparsity: The new final sparsity, in [0, 1).

        Returns:
            A new `PolynomialDecay` with the same steps, power and frequency.
        """
        sparsity = _check_sparsity("sparsity", sparsity)
        ratio = sparsity / self.final_sparsity if self.final_sparsity else 0.0
        return PolynomialDecay(
            min(self.initial_sparsity * ratio, sparsity),
            sparsity,
            self.begin_step,
            self.end_step,
            self.power,
            self.frequency,
        )

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_eff")
class ConstantSparsity(PruningSchedule):
    """A fixed sparsity from ``begin_step`` on (0 before), masks recomputed every ``frequency`` steps.

    With ``end_step`` the masks are updated no more after it, the last update falling on ``end_step``.
    Keras-serializable.

    Args:
        target_sparsity: The sparsity, in [0, 1).
        begin_step: The optimizer step pruning starts at.
        frequency: Steps between two mask updates, at least 1.
        end_step: The last update step, after ``begin_step``; None: masks keep updating.

    Raises:
        ValueError: If ``target_sparsity`` lies outside [0, 1), a step is negative, ``end_step`` is not after
            ``begin_step`` or ``frequency`` is below 1.
        TypeError: If ``target_sparsity`` is not a number or a step not an integer.

    Example:
        ```python
        pruned = keras_eff.prune_model(model, keras_eff.ConstantSparsity(0.5, begin_step=0, frequency=100))
        ```
    """

    def __init__(self, target_sparsity=0.5, begin_step=0, frequency=100, end_step=None):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step = _check_step("begin_step", begin_step)
        self.frequency = _check_step("frequency", frequency, minimum=1)
        if end_step is not None:
            end_step = _check_step("end_step", end_step)
            if end_step <= self.begin_step:
                raise ValueError(f"end_step ({end_step}) must be greater than begin_step ({self.begin_step})")
        self.end_step = end_step

    @property
    def target(self):
        """The sparsity the schedule holds: ``target_sparsity``."""
        return self.target_sparsity

    def sparsity_at(self, step):
        """The target sparsity after a number of optimizer steps.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            ``target_sparsity`` from ``begin_step`` on, 0.0 before.
        """
        return self.target_sparsity if step >= self.begin_step else 0.0

    def should_update(self, step):
        """Whether masks are recomputed at a step: every ``frequency`` steps from ``begin_step``, up to ``end_step``.

        Args:
            step: The number of optimizer steps taken.

        Returns:
            True at ``begin_step + k·frequency`` (none after ``end_step``), and at ``end_step``.
        """
        if self.end_step is not None:
            if step == self.end_step:
                return True
            if step > self.end_step:
                return False
        return step >= self.begin_step and (step - self.begin_step) % self.frequency == 0

    def with_target(self, sparsity):
        """Makes the same schedule with another sparsity.

        Args:
            sparsity: The new sparsity, in [0, 1).

        Returns:
            A new `ConstantSparsity` with the same steps and frequency.
        """
        return ConstantSparsity(sparsity, self.begin_step, self.frequency, self.end_step)

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "frequency": self.frequency,
            "end_step": self.end_step,
        }


def as_schedule(schedule) -> PruningSchedule:
    """A schedule from a schedule, a number (constant sparsity from step 0) or a config dict."""
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return ConstantSparsity(schedule, begin_step=0)
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    raise TypeError(
        f"schedule must be a PolynomialDecay, a ConstantSparsity or a sparsity in [0, 1), got "
        f"{type(schedule).__name__}: e.g. keras_eff.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, "
        f"end_step=1000)"
    )
