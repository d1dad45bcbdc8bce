"""The options of each post-training technique, one small serializable dataclass each (AIMET style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..quantization.quantizers import check_bits


class _Params:
    """get_config/from_config for the dataclasses below (unknown keys are refused, naming the known ones)."""

    def get_config(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**config)


def _positive(value, what):
    if not value > 0:
        raise ValueError(f"{what}={value!r} must be positive")


@dataclass
class EqualizeParams(_Params):
    """Options of ``keras_eff.ptq.equalize``.

    scale: cross-layer scaling of consecutive layer pairs (Nagel et al. 2019), iterated until the scales change by
    less than ``tolerance`` or ``max_iterations`` sweeps. absorb_bias: high-bias absorption through ReLU, shifting
    c = max(0, β − ``absorb_sigmas``·γ) into the next layer's bias; only into layers without padding effects
    (1×1 or 'valid' convolutions, Dense) unless ``absorb_through_padding``. relu6_to_relu: replace a ReLU6 between
    a scaled pair by ReLU (the scaling does not commute with the clip at 6); without it such pairs are not scaled.
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
class BiasCorrectionParams(_Params):
    """Options of ``keras_eff.ptq.bias_correction``.

    With data (empirical): the mean error of each layer's output caused by its quantized weights, measured on up to
    ``max_samples`` inputs in batches of ``batch_size``, layer after layer (each sees the corrected layers before it).
    Without data (analytical): E[ε·x] from the BatchNorm statistics of the layer in front (a ReLU of a Gaussian).
    """

    max_samples: int = 512
    batch_size: int = 64
    layers: tuple | None = None  # names of the inner layers to correct; None: all

    def __post_init__(self):
        _positive(self.max_samples, "max_samples")
        _positive(self.batch_size, "batch_size")
        if self.layers is not None:
            self.layers = tuple(self.layers)


@dataclass
class AdaRoundParams(_Params):
    """Options of ``keras_eff.ptq.adaround`` (Nagel et al. 2020).

    iterations of Adam (``learning_rate``) per layer on batches of ``batch_size`` cached inputs (``max_samples`` of
    them); regularizer weight ``reg_weight`` (λ) with β annealed linearly from ``beta_start`` to ``beta_end`` after a
    warm start of ``warm_start`` (share of the iterations) without it. ``zeta``/``gamma`` stretch the sigmoid.
    ``weight_bits`` re-quantizes every wrapper to that width first (None keeps each wrapper's own).
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
                raise ValueError(f"weight_bits={self.weight_bits} is out of range: AdaRound works on the 2–8 bit "
                                 f"grids int8 TFLite holds")
        if self.layers is not None:
            self.layers = tuple(self.layers)


@dataclass
class AutoQuantParams(_Params):
    """Options of ``keras_eff.ptq.auto_quant``: the steps it may try, in order, and their settings."""

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
        # validate the nested settings now rather than in the middle of a run
        EqualizeParams.from_config(self.equalize or {})
        BiasCorrectionParams.from_config(self.bias_correction or {})
        AdaRoundParams.from_config(self.adaround or {})

    def get_config(self) -> dict:
        out = asdict(self)
        out["steps"] = list(self.steps)
        return out
