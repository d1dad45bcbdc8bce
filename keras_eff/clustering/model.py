"""cluster_model: every conv and dense layer of a Functional or Sequential model wrapped in a ClusterWrapper."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import keras

from ..checks import check_finite_weights
from ..errors import UnsupportedModelError
from ..graph import clone_layer, describe_hidden, functional_of, hidden_layers, rebuild, refuse_rewritten
from ..options import config_keywords
from .centroids import check_init
from .wrapper import ClusterWrapper, check_n_clusters, is_clusterable

_LAYER_KEYS = ("n_clusters", "init", "per_channel", "preserve_sparsity", "reassign_every")


@keras.saving.register_keras_serializable(package="keras_eff")
@dataclass
class ClusterConfig:
    """Clustering settings for `cluster_model`, in one object (saved and loaded with ``get_config``/``from_config``).

    The fields apply to every clusterable layer; ``overrides`` changes them for some layers and ``skip`` leaves
    layers out.

    Attributes:
        n_clusters: Shared values per kernel (per output channel with ``per_channel``), an integer of at least 2;
            default 16.
        init: How the centroids start: ``"kmeans++"`` (default), ``"linear"``, ``"density"`` or ``"random"`` (see
            `fit_centroids`).
        per_channel: One set of centroids per output channel.
        preserve_sparsity: Weights that are exactly zero (pruned) stay zero through training and strip.
        reassign_every: Re-assign weights to their nearest centroid every N training steps, training the float kernel
            straight-through (default 1, every step, as TF-MOT does); None: fixed assignments, only the centroids
            learn.
        seed: The k-means seed.
        overrides: ``{layer name or class name ("Dense"): {setting: value}}`` for the settings ``n_clusters``,
            ``init``, ``per_channel``, ``preserve_sparsity`` and ``reassign_every``; a layer name beats a class name.
        skip: Names of layers to leave unclustered.

    Raises:
        ValueError: If ``n_clusters`` is not an integer of at least 2, ``init`` is unknown, or an override holds an
            unknown setting or a bad value.
        TypeError: If an override is not a dict.
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
                raise ValueError(
                    f"overrides[{key!r}] has unknown settings {sorted(unknown)}; known: {sorted(_LAYER_KEYS)}"
                )
            if "n_clusters" in values:
                check_n_clusters(values["n_clusters"], f"overrides[{key!r}]: ")
            if "init" in values:
                check_init(values["init"], f"overrides[{key!r}]: ")
        self.skip = tuple(self.skip)

    def for_layer(self, layer) -> dict | None:
        """Gives the settings for one layer: the fields, the overrides of its classes (base classes first), then of its
        name.

        Args:
            layer: A Keras layer.

        Returns:
            The keyword arguments of `ClusterWrapper` for ``layer`` (seed included), or None when it is skipped.
        """
        if layer.name in self.skip:
            return None
        out = {k: getattr(self, k) for k in _LAYER_KEYS}
        for cls in reversed(type(layer).__mro__):
            out.update(self.overrides.get(cls.__name__, {}))
        out.update(self.overrides.get(layer.name, {}))
        return dict(out, seed=self.seed)

    def get_config(self):
        """Serializes the settings.

        Returns:
            ``{field: value}``, ``skip`` as a list.
        """
        out = asdict(self)
        out["skip"] = list(self.skip)
        return out

    @classmethod
    def from_config(cls, config):
        """Makes settings from a dict written by ``get_config``.

        Args:
            config: ``{field: value}``.

        Returns:
            A new `ClusterConfig`, checked as when it is made.
        """
        return cls(**config)


@config_keywords(
    ClusterConfig,
    ("n_clusters", "init", "per_channel", "preserve_sparsity", "reassign_every", "skip", "overrides", "seed"),
)
def cluster_model(
    model,
    n_clusters=16,
    init="kmeans++",
    per_channel=False,
    preserve_sparsity=False,
    reassign_every=1,
    *,
    skip=(),
    overrides=None,
    seed=0,
    config: ClusterConfig | None = None,
):
    """Makes a copy of a model whose clusterable layers are wrapped for weight clustering; ``model`` is unchanged.

    Every layer the registry marks clusterable (Dense, the convolutions, custom layers that declare it), nested models
    included, is wrapped in a `ClusterWrapper` whose centroids start from the layer's current weights. Train the
    result as usual (the centroids learn), then `strip` it to get a plain model with at most ``n_clusters`` distinct
    values per kernel. ``clustering_report(new_model).clustered_layers`` lists the names of the wrapped layers.

    Args:
        model: A built Functional or Sequential Keras model. Not changed. For a subclassed model, wrap its layers
            with `cluster` instead.
        n_clusters: Shared values per kernel (per output channel with ``per_channel``), at least 2.
        init: How the centroids start: ``"kmeans++"`` (default), ``"linear"``, ``"density"`` or ``"random"``.
        per_channel: One set of centroids per output channel.
        preserve_sparsity: Weights that are exactly zero (pruned) stay zero through training and strip.
        reassign_every: Re-assign weights to their nearest centroid every N training steps, training the float kernel
            straight-through (1, the default, is what TF-MOT does); None: fixed assignments, only the centroids learn.
        skip: Names of layers to leave unclustered.
        overrides: ``{layer name or class name: {setting: value}}``, settings for some layers (see `ClusterConfig`).
        seed: The k-means seed.
        config: A `ClusterConfig` or a dict of its fields; the settings above that are given override its
            fields.

    Returns:
        A new Keras model holding `ClusterWrapper` layers.

    Raises:
        TypeError: If ``model`` is not a Keras model, or ``config`` is neither a `ClusterConfig` nor a dict.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.
        ValueError: If a setting is out of range, ``skip`` or ``overrides`` names no layer or layer class of the
            model, the model is already quantized or holds pruning or clustering wrappers (strip it first), a kernel
            has fewer weights than ``n_clusters``, or a kernel holds NaN or infinite values.

    Example:
        ```python
        clustered = keras_eff.cluster_model(model, 16, preserve_sparsity=True)
        clustered.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        clustered.fit(x_train, y_train, epochs=1)
        final = keras_eff.strip(clustered)  # plain Keras model, at most 16 distinct values per kernel
        ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"cluster_model expects a Keras 3 model, got {type(model).__name__}")
    if config is None:  # (a config given has the settings passed here in it: config_keywords)
        config = ClusterConfig(
            n_clusters=n_clusters,
            init=init,
            per_channel=per_channel,
            preserve_sparsity=preserve_sparsity,
            reassign_every=reassign_every,
            seed=seed,
            overrides=dict(overrides or {}),
            skip=tuple(skip),
        )
    try:
        functional = functional_of(model)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(
            f"cluster_model cannot rewrite model {model.name!r}: {err}. For a subclassed model, wrap its layers: "
            f"self.conv = keras_eff.cluster(layers.Conv2D(...), 16)"
        ) from err
    refuse_rewritten(functional, "cluster", "clusters", " (preserve_sparsity=True keeps a pruned model's zeros)")
    all_layers = list(functional._flatten_layers(include_self=False, recursive=True))
    known = {l.name for l in all_layers} | {c.__name__ for l in all_layers for c in type(l).__mro__}
    unknown = [k for k in list(config.overrides) + list(config.skip) if k not in known]
    if unknown:
        raise ValueError(
            f"cluster_model names {unknown}, which match no layer name or layer class of model "
            f"{model.name!r}; its layers are: {', '.join(sorted(l.name for l in all_layers))}"
        )
    check_finite_weights(model, "clustering it")
    candidates = [layer for layer in all_layers if is_clusterable(layer)]
    if not any(config.for_layer(layer) is not None for layer in candidates):
        raise ValueError(
            f"no layer of model {model.name!r} can be clustered with these settings: "
            + (
                "; ".join(f"{layer.name}: skipped by request" for layer in candidates)
                or "it has no clusterable layer (conv, dense or another layer with a kernel)"
            )
        )

    hidden = hidden_layers(functional, is_clusterable)
    if hidden:
        warnings.warn(
            f"cluster_model: layers {describe_hidden(hidden)} call clusterable layers, which are not "
            f"clustered: keras-eff clusters the layers of the model's graph. In the custom layer's code, wrap them "
            f"with keras_eff.cluster(layer, n_clusters), or declare the custom layer clusterable (keras_eff_facts, "
            f"docs/layers.md)",
            stacklevel=2,
        )

    def transform(rb, node, args, kwargs):
        op = node.operation
        if isinstance(op, ClusterWrapper) or not is_clusterable(op):
            return None  # (a nested model too: rb.keep rebuilds it with this transform, once for all its calls)
        settings = config.for_layer(op)
        if settings is None:
            return None

        def wrap(a, k):
            new = clone_layer(op, name=op.name)
            new.build_from_config(op.get_build_config())
            new.set_weights(op.get_weights())
            wrapper = ClusterWrapper(new, **settings)
            return wrapper, wrapper(*a, **k)

        return rb.call_shared(op, args, kwargs, wrap)

    return rebuild(functional, transform, name=model.name)
