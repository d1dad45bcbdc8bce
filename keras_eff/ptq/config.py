"""The options of each post-training technique: one small serializable ``…Config`` dataclass each.

Each technique takes its config as ``config=`` (an instance or a dict of its fields), and any field as a keyword
argument that overrides the config's: ``adaround(q, x, config=AdaRoundConfig(iterations=500), seed=1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..quantization.quantizers import check_bits


@dataclass
class _Config:
    """get_config/from_config for the dataclasses below (unknown keys are refused, naming the known ones).

    A dataclass with no fields itself, so that ``asdict``/``fields`` type-check on it."""

    def get_config(self) -> dict:
        """Serializes the options.

        Returns:
            ``{field: value}``.
        """
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict):
        """Makes options from a dict written by ``get_config``.

        Args:
            config: ``{field: value}``; fields left out take their defaults.

        Returns:
            A new instance of this class, checked as when it is made.

        Raises:
            ValueError: If ``config`` holds a key that is not a field (the message lists the fields), or a value
                is out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**config)


def _positive(value, what):
    if not value > 0:
        raise ValueError(f"{what}={value!r} must be positive")


@dataclass
class EqualizeConfig(_Config):
    """Options of `keras_eff.ptq.equalize` (Nagel et al. 2019).

    Attributes:
        scale: Cross-layer scaling of consecutive layer pairs, iterated until the scales change by less than
            ``tolerance`` or for ``max_iterations`` sweeps.
        absorb_bias: High-bias absorption through ReLU: c = max(0, β − ``absorb_sigmas``·γ) moves from a layer's bias
            into the next layer's.
        relu6_to_relu: Replace a ReLU6 between a scaled pair by ReLU (the scaling does not commute with the clip at
            6); False leaves such pairs unscaled.
        max_iterations: The most scaling sweeps, at least 1.
        tolerance: Sweeps stop once no scale changes by more than this (in log terms); positive.
        absorb_sigmas: How many standard deviations below the mean stay in the first layer's bias; positive.
        absorb_through_padding: Also absorb into layers that see zero padding (k×k 'same' convolutions), where the
            shift is only approximately exact at the borders.

    Raises:
        ValueError: If ``max_iterations`` is below 1, or ``tolerance`` or ``absorb_sigmas`` is not positive.
    """

    scale: bool = True
    absorb_bias: bool = True
    relu6_to_relu: bool = True
    max_iterations: int = 20
    tolerance: float = 1e-4
    absorb_sigmas: float = 3.0
    absorb_through_padding: bool = False

    def __post_init__(self):
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations={self.max_iterations!r} must be at least 1")
        _positive(self.tolerance, "tolerance")
        _positive(self.absorb_sigmas, "absorb_sigmas")


@dataclass
class BiasCorrectionConfig(_Config):
    """Options of `keras_eff.ptq.bias_correction`.

    With data (empirical): the mean error of each layer's output caused by its quantized weights, measured on up to
    ``max_samples`` inputs in batches of ``batch_size``, layer after layer (each sees the corrected layers before it).
    Without data (analytical): E[ε·x] from the BatchNorm statistics of the layer in front (a ReLU of a Gaussian).

    Attributes:
        max_samples: The most inputs of ``data`` read; positive.
        batch_size: Inputs per forward pass; positive.
        layers: Names of the inner layers to correct (``"conv"``, not ``"quant_conv"``); None: all.

    Raises:
        ValueError: If ``max_samples`` or ``batch_size`` is not positive.
    """

    max_samples: int = 512
    batch_size: int = 64
    layers: tuple | None = None

    def __post_init__(self):
        _positive(self.max_samples, "max_samples")
        _positive(self.batch_size, "batch_size")
        if self.layers is not None:
            self.layers = tuple(self.layers)


@dataclass
class AdaRoundConfig(_Config):
    """Options of `keras_eff.ptq.adaround` (Nagel et al. 2020).

    Attributes:
        iterations: Adam steps per layer; positive.
        batch_size: Cached inputs per step; positive.
        max_samples: The most inputs of ``data`` cached; positive.
        learning_rate: Adam's step size; positive.
        reg_weight: The regularizer's weight λ, which pushes each rounding to up or down; zero or positive.
        beta_start: β of the regularizer at the end of the warm start, annealed linearly to ``beta_end``; positive.
        beta_end: β at the last iteration; positive.
        warm_start: The share of the iterations run without the regularizer, in [0, 1).
        zeta: The stretch of the rectified sigmoid above 1; more than 1.
        gamma: The stretch of the rectified sigmoid below 0; negative.
        weight_bits: Re-quantize every wrapper to this many bits (2 to 8) first; None keeps each wrapper's own.
        layers: Names of the inner layers to round (``"conv"``); None: all it can handle.
        seed: Seeds the choice of batches.

    Raises:
        ValueError: If a count or rate is not positive, ``reg_weight`` is negative, ``warm_start`` is outside
            [0, 1), ``zeta``/``gamma`` do not stretch the sigmoid, or ``weight_bits`` is outside 2 to 8.
    """

    iterations: int = 1000
    batch_size: int = 32
    max_samples: int = 1024
    learning_rate: float = 1e-2
    reg_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warm_start: float = 0.2
    zeta: float = 1.1
    gamma: float = -0.1
    weight_bits: int | None = None
    layers: tuple | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("iterations", "batch_size", "max_samples", "learning_rate", "beta_start", "beta_end"):
            _positive(getattr(self, name), name)
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight={self.reg_weight!r} must be zero or positive")
        if not 0.0 <= self.warm_start < 1.0:
            raise ValueError(f"warm_start={self.warm_start!r} must lie in [0, 1)")
        if not (self.zeta > 1.0 and self.gamma < 0.0):
            raise ValueError(f"zeta={self.zeta} must exceed 1 and gamma={self.gamma} be negative (stretched sigmoid)")
        if self.weight_bits is not None:
            check_bits(self.weight_bits, "weight_bits")
            if self.weight_bits > 8:
                raise ValueError(
                    f"weight_bits={self.weight_bits} is out of range: AdaRound works on the 2–8 bit "
                    f"grids int8 TFLite holds"
                )
        if self.layers is not None:
            self.layers = tuple(self.layers)


def _nested(value, cls, what) -> dict | None:
    """A nested step's options as the dict AutoQuantConfig keeps (an instance of ``cls`` becomes its config),
    checked now rather than in the middle of a run."""
    if value is None:
        return None
    if isinstance(value, cls):
        return value.get_config()
    if not isinstance(value, dict):
        raise TypeError(f"{what} takes a {cls.__name__} or a dict of its fields, got {type(value).__name__}")
    cls.from_config(value)
    return dict(value)


@dataclass
class AutoQuantConfig(_Config):
    """Options of `keras_eff.ptq.auto_quant`: the steps it may try, in order, and their settings.

    Attributes:
        allowed_drop: The largest drop of ``eval_fn``'s score from the float model's that ends the search; zero or
            positive.
        steps: The steps to try, in order, each one of ``"ptq"``, ``"cle"``, ``"cle+bc"`` and ``"cle+adaround"``.
        equalize: The options of the equalization in the ``cle`` steps: an `EqualizeConfig` or a dict of its
            fields (kept as a dict); None: the defaults.
        bias_correction: The options of the bias correction in ``cle+bc``: a `BiasCorrectionConfig` or a dict.
        adaround: The options of AdaRound in ``cle+adaround``: an `AdaRoundConfig` or a dict.

    Raises:
        ValueError: If ``allowed_drop`` is negative, ``steps`` is empty or names an unknown step, or a nested
            setting is unknown or out of range.
        TypeError: If a nested setting is neither its config class nor a dict.
    """

    allowed_drop: float = 0.01
    steps: tuple = ("ptq", "cle", "cle+bc", "cle+adaround")
    equalize: dict | None = None
    bias_correction: dict | None = None
    adaround: dict | None = None

    STEPS = ("ptq", "cle", "cle+bc", "cle+adaround")

    def __post_init__(self):
        if self.allowed_drop < 0:
            raise ValueError(f"allowed_drop={self.allowed_drop!r} must be zero or positive")
        self.steps = tuple(self.steps)
        bad = [s for s in self.steps if s not in self.STEPS]
        if bad or not self.steps:
            raise ValueError(f"steps={self.steps!r}: each must be one of {self.STEPS}")
        self.equalize = _nested(self.equalize, EqualizeConfig, "equalize")
        self.bias_correction = _nested(self.bias_correction, BiasCorrectionConfig, "bias_correction")
        self.adaround = _nested(self.adaround, AdaRoundConfig, "adaround")

    def get_config(self) -> dict:
        """Serializes the options.

        Returns:
            ``{field: value}``, ``steps`` as a list.
        """
        out = asdict(self)
        out["steps"] = list(self.steps)
        return out


__all__ = ["AdaRoundConfig", "AutoQuantConfig", "BiasCorrectionConfig", "EqualizeConfig"]
