"""cluster_model: every conv and dense layer of a Functional or Sequential model wrapped in a ClusterWrapper."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import keras

from ..checks import check_finite_weights
from ..errors import UnsupportedModelError
from ..graph import clone_layer, functional_of, rebuild, refuse_rewritten
from .centroids import check_init
from .wrapper import ClusterWrapper, check_n_clusters, is_clusterable

_LAYER_KEYS = ("n_clusters", "init", "per_channel", "preserve_sparsity", "reassign_every")


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass
class ClusterConfig:
    """Clustering settings for ``cluster_model``.

    The fields apply to every clusterable layer; ``overrides`` maps a layer name or class name (``"Dense"``) to a
    dict of fields for those layers (a name beats a class); layers named in ``skip`` stay as they are.
    """

    n_clusters: int = 16
    init: str = "kmeans++"
    per_channel: bool = False
    preserve_sparsity: bool = False
    reassign_every: int | None = 1
    seed: int = 0
    overrides: dict = field(default_factory=dict)
    skip: tuple = ()

    def __post_init__(self):
        check_n_clusters(self.n_clusters)
        check_init(self.init)
        for key, values in self.overrides.items():
            if not isinstance(values, dict):
                raise TypeError(f"overrides[{key!r}] must be a dict of settings, got {type(values).__name__}")
            unknown = set(values) - set(_LAYER_KEYS)
            if unknown:
                raise ValueError(f"overrides[{key!r}] has unknown settings {sorted(unknown)}; known: "
                                 f"{sorted(_LAYER_KEYS)}")
            if "n_clusters" in values:
                check_n_clusters(values["n_clusters"], f"overrides[{key!r}]: ")
            if "init" in values:
                check_init(values["init"], f"overrides[{key!r}]: ")
        self.skip = tuple(self.skip)

    def for_layer(self, layer) -> dict | None:
        """The ClusterWrapper arguments for ``layer``, or None when it is skipped."""
        if layer.name in self.skip:
            return None
        out = {k: getattr(self, k) for k in _LAYER_KEYS}
        for cls in reversed(type(layer).__mro__):
            out.update(self.overrides.get(cls.__name__, {}))
        out.update(self.overrides.get(layer.name, {}))
        return dict(out, seed=self.seed)

    def get_config(self):
        out = asdict(self)
        out["skip"] = list(self.skip)
        return out

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def cluster_model(model, n_clusters=16, init="kmeans++", per_channel=False, preserve_sparsity=False,
                  reassign_every=1, *, skip=(), overrides=None, seed=0, config: ClusterConfig | None = None):
    """A new model whose conv and dense layers are clustered from their current weights (``model`` is unchanged).

    Args:
        n_clusters: shared values per kernel (per output channel with ``per_channel``), ≥ 2.
        init: "kmeans++" (default), "linear", "density" or "random".
        per_channel: one set of centroids per output channel.
        preserve_sparsity: weights that are exactly zero (pruned) stay zero through training and strip.
        reassign_every: re-assign weights to their nearest centroid every N training steps, training the float
            kernel straight-through (1, the default, is what TF-MOT does; None: fixed assignments, only the
            centroids learn).
        skip: names of layers to leave unclustered; overrides: {layer name or class: {setting: value}}.
        config: a ``ClusterConfig`` instead of the arguments above.

    Train the result as usual (the centroids learn), then ``keras_eff.strip`` it. ``new.clustered_layers`` lists the
    names of the wrapped layers.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"cluster_model expects a Keras 3 model, got {type(model).__name__}")
    if config is None:
        config = ClusterConfig(n_clusters=n_clusters, init=init, per_channel=per_channel,
                               preserve_sparsity=preserve_sparsity, reassign_every=reassign_every, seed=seed,
                               overrides=dict(overrides or {}), skip=tuple(skip))
    elif not isinstance(config, ClusterConfig):
        raise TypeError(f"config must be a keras_eff.clustering.ClusterConfig, got {type(config).__name__}")
    try:
        functional = functional_of(model)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(
            f"cluster_model cannot rewrite model {model.name!r}: {err}. For a subclassed model, wrap its layers: "
            f"self.conv = keras_eff.cluster(layers.Conv2D(...), 16)") from err
    refuse_rewritten(functional, "cluster", "clusters", " (preserve_sparsity=True keeps a pruned model's zeros)")
    all_layers = list(functional._flatten_layers(include_self=False, recursive=True))
    known = {l.name for l in all_layers} | {c.__name__ for l in all_layers for c in type(l).__mro__}
    unknown = [k for k in list(config.overrides) + list(config.skip) if k not in known]
    if unknown:
        raise ValueError(f"cluster_model names {unknown}, which match no layer name or layer class of model "
                         f"{model.name!r}; its layers are: {', '.join(sorted(l.name for l in all_layers))}")
    check_finite_weights(model, "clustering it")
    candidates = [layer for layer in all_layers if is_clusterable(layer)]
    if not any(config.for_layer(layer) is not None for layer in candidates):
        raise ValueError(f"no layer of model {model.name!r} can be clustered with these settings: "
                         + ("; ".join(f"{layer.name}: skipped by request" for layer in candidates)
                            or "it has no clusterable layer (conv, dense or another layer with a kernel)"))
    clustered = []

    def transform(rb, node, args, kwargs):
        op = node.operation
        if isinstance(op, keras.Model):
            inner = rebuild(op, transform)
            return inner(*args, **kwargs)
        if isinstance(op, ClusterWrapper) or not is_clusterable(op):
            return None
        settings = config.for_layer(op)
        if settings is None:
            return None
        new = clone_layer(op, name=op.name)
        new.build_from_config(op.get_build_config())
        new.set_weights(op.get_weights())
        wrapper = ClusterWrapper(new, **settings)
        out = wrapper(*args, **kwargs)
        clustered.append(op.name)
        return out

    new = rebuild(functional, transform, name=model.name)
    new.clustered_layers = clustered
    return new

