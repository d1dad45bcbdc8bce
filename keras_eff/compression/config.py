"""Options of each compression method: one small ``…Config`` dataclass a method, with get_config/from_config.

Each method takes its config as ``config=`` (an instance or a dict of its fields), and any field as a keyword argument
that overrides the config's: ``spatial_svd(model, 0.5, config=SpatialSvdConfig(multiple=8), exclude=["stem"])``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


@dataclass
class CompressionConfig:
    """Options shared by the compression methods; `SpatialSvdConfig` and `ChannelPruningConfig` add their own.

    Attributes:
        cost_metric: What ``target_ratio`` counts: ``"macs"`` (default) or ``"params"``, of the conv and dense layers.
        candidate_ratios: The per-layer ratios tried in the sensitivity analysis (fractions of the layer's cost
            kept), each strictly between 0 and 1; default 0.9, 0.8, ..., 0.1.
        layers: Names of the layers to consider; None (default): every eligible layer.
        exclude: Names of layers to leave alone.
        multiple: Ranks and kept channel counts are rounded down to a multiple of this (8 suits XNNPACK and int8
            kernels); default 1.
        num_eval_samples: How many inputs of ``data`` the output-error score uses when no ``eval_fn`` is given.
        seed: Seeds the sampling of inputs and positions.

    Raises:
        ValueError: If ``candidate_ratios`` is empty or holds a value outside (0, 1), ``cost_metric`` is unknown, or
            ``multiple`` or ``num_eval_samples`` is below 1.
        TypeError: If ``layers`` or ``exclude`` is a single string instead of a list of names.
    """

    cost_metric: str = "macs"
    candidate_ratios: tuple = DEFAULT_RATIOS
    layers: tuple | None = None
    exclude: tuple = ()
    multiple: int = 1
    num_eval_samples: int = 256
    seed: int = 0

    def __post_init__(self):
        self.candidate_ratios = tuple(float(r) for r in self.candidate_ratios)
        if not self.candidate_ratios or any(not 0.0 < r < 1.0 for r in self.candidate_ratios):
            raise ValueError(
                f"candidate_ratios must be a non-empty list of numbers strictly between 0 and 1, got "
                f"{self.candidate_ratios}"
            )
        if self.cost_metric not in ("macs", "params"):
            raise ValueError(f"cost_metric must be 'macs' or 'params', got {self.cost_metric!r}")
        if isinstance(self.layers, str) or isinstance(self.exclude, str):
            raise TypeError("layers and exclude take a list of layer names, not a single string")
        self.layers = None if self.layers is None else tuple(self.layers)
        self.exclude = tuple(self.exclude)
        if int(self.multiple) < 1:
            raise ValueError(f"multiple must be an integer >= 1, got {self.multiple!r}")
        if int(self.num_eval_samples) < 1:
            raise ValueError(f"num_eval_samples must be >= 1, got {self.num_eval_samples!r}")

    def get_config(self) -> dict:
        """Serializes the options.

        Returns:
            ``{field: value}``, tuples as lists.
        """
        config = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

    @classmethod
    def from_config(cls, config: dict):
        """Makes options from a dict written by ``get_config``.

        Args:
            config: ``{field: value}``.

        Returns:
            A new instance of this class, checked as when it is made.
        """
        return cls(**config)


@dataclass
class SpatialSvdConfig(CompressionConfig):
    """Options of `spatial_svd`: those shared by every method (see `CompressionConfig`).

    Attributes:
        cost_metric: As in `CompressionConfig`.
        candidate_ratios: As in `CompressionConfig`.
        layers: As in `CompressionConfig`.
        exclude: As in `CompressionConfig`.
        multiple: As in `CompressionConfig`.
        num_eval_samples: As in `CompressionConfig`.
        seed: As in `CompressionConfig`.
    """


@dataclass
class ChannelPruningConfig(CompressionConfig):
    """Options of `channel_pruning`: the shared ones (see `CompressionConfig`) and those of the least-squares refit.

    Attributes:
        cost_metric: As in `CompressionConfig`.
        candidate_ratios: As in `CompressionConfig`.
        layers: As in `CompressionConfig`.
        exclude: As in `CompressionConfig`.
        multiple: As in `CompressionConfig`.
        num_eval_samples: As in `CompressionConfig`.
        seed: As in `CompressionConfig`.
        num_reconstruction_samples: Rows of each layer's least-squares problem (sampled output positions); default
            5000.
        samples_per_image: Output positions sampled per input image; default 10. ``num_reconstruction_samples /
            samples_per_image`` images of ``data`` are used.
        reconstruct: Refit the kept weights by least squares (default); False only drops the pruned channels'
            weights.
        ridge: Tikhonov regularisation of the refit, relative to the mean energy of the input columns; default 1e-3.

    Raises:
        ValueError: As `CompressionConfig`, or if ``num_reconstruction_samples`` or ``samples_per_image`` is
            below 1 or ``ridge`` is negative.
    """

    num_reconstruction_samples: int = 5000
    samples_per_image: int = 10
    reconstruct: bool = True
    ridge: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if int(self.samples_per_image) < 1 or int(self.num_reconstruction_samples) < 1:
            raise ValueError("num_reconstruction_samples and samples_per_image must be >= 1")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {self.ridge!r}")


__all__ = ["ChannelPruningConfig", "CompressionConfig", "DEFAULT_RATIOS", "SpatialSvdConfig"]
