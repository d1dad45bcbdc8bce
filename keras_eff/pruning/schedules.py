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
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, float) and value.is_integer()):
        raise TypeError(f"{name} must be an integer step, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class PruningSchedule(abc.ABC):
    """Base class. Subclasses define ``sparsity_at``, ``should_update``, ``target`` and ``with_target``."""

    #: the step after which the sparsity no longer changes (None: never settles)
    end_step = None

    def __call__(self, step: int):
        """``(update now?, sparsity)`` at ``step``, as TF-MOT's schedules return them."""
        return self.should_update(step), self.sparsity_at(step)

    @property
    @abc.abstractmethod
    def target(self) -> float:
        """The sparsity the schedule ends at."""

    @abc.abstractmethod
    def sparsity_at(self, step: int) -> float:
        """The target sparsity after ``step`` optimizer steps."""

    @abc.abstractmethod
    def should_update(self, step: int) -> bool:
        """Whether masks are recomputed at ``step``."""

    @abc.abstractmethod
    def with_target(self, sparsity: float) -> "PruningSchedule":
        """The same schedule with its final sparsity replaced (per-layer distributions use this)."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The constructor arguments."""

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
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity`` between ``begin_step`` and ``end_step``:

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** power

    Masks are updated every ``frequency`` steps from ``begin_step`` and once more at ``end_step`` whatever the
    frequency, so the final sparsity is always reached (TF-MOT skipped it when ``end_step`` was off the grid).
    """

    def __init__(self, initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=1000, power=3,
                 frequency=100):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step = _check_step("begin_step", begin_step)
        self.end_step = _check_step("end_step", end_step)
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be greater than begin_step ({self.begin_step})")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity "
                             f"({self.final_sparsity}): pruning only removes weights")
        power = float(power)
        if not math.isfinite(power) or power <= 0:
            raise ValueError(f"power must be a positive number, got {power}")
        self.power = power
        self.frequency = _check_step("frequency", frequency, minimum=1)

    @property
    def target(self):
        return self.final_sparsity

    def sparsity_at(self, step):
        if step <= self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power

    def should_update(self, step):
        if step == self.end_step:
            return True
        return self.begin_step <= step < self.end_step and (step - self.begin_step) % self.frequency == 0

    def with_target(self, sparsity):
        sparsity = _check_sparsity("sparsity", sparsity)
        ratio = sparsity / self.final_sparsity if self.final_sparsity else 0.0
        return PolynomialDecay(min(self.initial_sparsity * ratio, sparsity), sparsity, self.begin_step,
                               self.end_step, self.power, self.frequency)

    def get_config(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
                "frequency": self.frequency}


@keras.saving.register_keras_serializable(package="keras_eff")
class ConstantSparsity(PruningSchedule):
    """A fixed ``target_sparsity`` from ``begin_step`` on, masks recomputed every ``frequency`` steps (and no more
    after ``end_step`` where one is given, the last update falling on ``end_step``)."""

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
        return self.target_sparsity

    def sparsity_at(self, step):
        return self.target_sparsity if step >= self.begin_step else 0.0

    def should_update(self, step):
        if self.end_step is not None:
            if step == self.end_step:
                return True
            if step > self.end_step:
                return False
        return step >= self.begin_step and (step - self.begin_step) % self.frequency == 0

    def with_target(self, sparsity):
        return ConstantSparsity(sparsity, self.begin_step, self.frequency, self.end_step)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                "frequency": self.frequency, "end_step": self.end_step}


def as_schedule(schedule) -> PruningSchedule:
    """A schedule from a schedule, a number (constant sparsity from step 0) or a config dict."""
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return ConstantSparsity(schedule, begin_step=0)
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    raise TypeError(f"schedule must be a PolynomialDecay, a ConstantSparsity or a sparsity in [0, 1), got "
                    f"{type(schedule).__name__}: e.g. keras_eff.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, "
                    f"end_step=1000)")
