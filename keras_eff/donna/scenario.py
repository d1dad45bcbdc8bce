"""A deployment scenario: where the model runs (measurers, thread count, input size) and what it must fit (limits).

The accuracy model does not depend on the scenario, so the same predictor is searched again for each scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .measurers import KNOWN_METRICS, measurer_from_config
from .space import SearchSpace


@dataclass
class Scenario:
    """A deployment scenario: where the model runs (measurers, input size) and what it must fit (limits).

    The accuracy model does not depend on the scenario, so the same predictor is searched again for each one
    (:func:`search`). A `MicroBudget` measurer also requires every op to be one TFLite Micro has; an
    `EthosUMeasurer` (``{"kind": "ethos_u", "accelerator": "ethos-u55-128"}``) gives Vela's latency, flash and
    SRAM and, unless ``npu_cpu_ops`` is limited otherwise, requires every op on the NPU. The measurers are
    normalized to their configs.

    Attributes:
        name: The scenario's name: letters, digits, ``-``, ``_`` and ``.`` (it names files).
        measurers: Measurer configs (``{"kind": "litert", "num_threads": 2}``, ``{"kind": "micro"}``,
            ``{"kind": "ray", "inner": {...}, "device": "pi"}``) or `Measurer` objects; one alone is accepted.
        input_shape: ``(height, width, channels)`` of the deployed model's input, replacing the space's for
            measuring (not for the accuracy model); None keeps the space's.
        objective: The metric minimized against accuracy; one the measurers give.
        limits: The largest allowed value of metrics, e.g. ``{"latency_us": 500, "flash_bytes": 262144,
            "ram_bytes": 65536}``; positive numbers, on metrics the measurers give.

    Raises:
        ValueError: If the name is invalid, there is no measurer or one is invalid, ``input_shape`` is not three
            positive integers, the objective is not measured, or a limit is on an unknown or unmeasured metric or
            not a positive number.

    Example:
        ```python
        laptop = Scenario("litert_2threads", [{"kind": "litert", "num_threads": 2}], limits={"latency_us": 300})
        mcu = Scenario("mcu", [{"kind": "litert"}, {"kind": "micro"}], input_shape=(32, 32, 1),
                       limits={"flash_bytes": 256 * 1024, "ram_bytes": 64 * 1024})
        ```
    """

    name: str = "litert_1thread"
    measurers: list = field(default_factory=lambda: [{"kind": "litert", "num_threads": 1}])
    input_shape: tuple | None = None
    objective: str = "latency_us"
    limits: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(
                f"Scenario.name: {self.name!r} must be a non-empty name of letters, digits, '-', '_', '.'"
                f" (it names files)"
            )
        if isinstance(self.measurers, (dict, str)):
            self.measurers = [self.measurers]
        if not self.measurers:
            raise ValueError(
                f"scenario {self.name!r}: measurers is empty; give at least one, e.g. [{{'kind': 'litert'}}]"
            )
        self._measurers = [measurer_from_config(m) for m in self.measurers]
        self.measurers = [m.get_config() for m in self._measurers]
        if self.input_shape is not None:
            self.input_shape = tuple(self.input_shape)
            if len(self.input_shape) != 3 or any(not isinstance(s, int) or s < 1 for s in self.input_shape):
                raise ValueError(
                    f"scenario {self.name!r}: input_shape {self.input_shape} must be (height, width, "
                    f"channels), positive ints"
                )
        provided = self.provided_metrics()
        if self.objective not in provided:
            raise ValueError(
                f"scenario {self.name!r}: objective {self.objective!r} is not measured by its measurers "
                f"(they give {', '.join(provided)})"
            )
        self.limits = dict(self.limits or {})
        for k, v in self.limits.items():
            if k not in KNOWN_METRICS:
                raise ValueError(
                    f"scenario {self.name!r}: limit on unknown metric {k!r}; choose from {', '.join(KNOWN_METRICS)}"
                )
            if k not in provided:
                raise ValueError(
                    f"scenario {self.name!r}: limit on {k!r}, but no measurer gives it (add "
                    f"{{'kind': 'micro'}} for flash/RAM, {{'kind': 'litert'}} for latency, "
                    f"{{'kind': 'ethos_u'}} for an Ethos-U NPU's latency, flash and SRAM)"
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"scenario {self.name!r}: limit {k} = {v!r} must be a positive number")
        if "micro_unsupported_ops" in provided:
            self.limits.setdefault("micro_unsupported_ops", 0.5)  # every op must be one TFLite Micro has
        if "npu_cpu_ops" in provided:
            self.limits.setdefault("npu_cpu_ops", 0.5)  # every op on the NPU

    def provided_metrics(self) -> list:
        """The metrics the scenario's measurers give.

        Returns:
            Metric names, without repeats, in the measurers' order.
        """
        out = []
        for m in self._measurers:
            out += [k for k in m.metrics if k not in out]
        return out

    def make_measurers(self) -> list:
        """The scenario's measurers.

        Returns:
            A new list of its `Measurer` objects (the same objects each call).
        """
        return list(self._measurers)

    def space_for(self, space: SearchSpace) -> SearchSpace:
        """The space as this scenario measures it.

        Args:
            space: The `SearchSpace`.

        Returns:
            ``space`` with this scenario's ``input_shape`` (``space`` itself when the scenario keeps the input).

        Raises:
            ValueError: If the space does not accept that input shape.
        """
        if self.input_shape is None or tuple(self.input_shape) == tuple(space.input_shape):
            return space
        return SearchSpace.from_config({**space.get_config(), "input_shape": list(self.input_shape)})

    def violations(self, metrics: dict) -> dict:
        """How far measured metrics are from the limits.

        Args:
            metrics: Measured ``{metric: value}``.

        Returns:
            Per limit, ``value - limit`` (<= 0 where it is met); a missing, None or NaN value counts as infinite.
        """
        out = {}
        for k, lim in self.limits.items():
            v = metrics.get(k, math.inf)
            v = math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            out[k] = v - float(lim)
        return out

    def feasible(self, metrics: dict) -> bool:
        """Whether measured metrics meet every limit.

        Args:
            metrics: Measured ``{metric: value}``.

        Returns:
            True when every :meth:`violations` value is <= 0.
        """
        return all(v <= 0 for v in self.violations(metrics).values())

    def get_config(self) -> dict:
        """The scenario as a plain mapping (limits implied by the measurers left out).

        Returns:
            A dict that :meth:`from_config` reads back.
        """
        implied = ("micro_unsupported_ops", "npu_cpu_ops")  # set by __post_init__ when not given
        limits = {k: v for k, v in self.limits.items() if not (k in implied and v == 0.5)}
        return {
            "name": self.name,
            "measurers": [dict(m) for m in self.measurers],
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "objective": self.objective,
            "limits": limits,
        }

    @classmethod
    def from_config(cls, config: dict) -> Scenario:
        """A scenario from a mapping, as a config file gives it.

        Args:
            config: A mapping of the fields (``name``, ``measurers``, ``input_shape``, ``objective``, ``limits``).

        Returns:
            A new `Scenario`.

        Raises:
            ValueError: If ``config`` is not a mapping, holds an unknown key, or a value is invalid.
        """
        if not isinstance(config, dict):
            raise ValueError(f"a scenario config is a mapping, got {type(config).__name__}")
        allowed = {"name", "measurers", "input_shape", "objective", "limits"}
        unknown = set(config) - allowed
        if unknown:
            raise ValueError(f"unknown scenario field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**config)
