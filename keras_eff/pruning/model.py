"""prune_model: a copy of a model whose prunable layers carry masks, with per-layer targets."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import keras
import numpy as np
from keras import layers

from ..checks import check_finite_weights
from ..graph import (
    channel_groups,
    clone_layer,
    copy_weights,
    describe_hidden,
    graph_layers,
    hidden_layers,
    rebuild,
    refuse_rewritten,
)
from ..options import config_keywords
from . import distribution as dist
from .schedules import ConstantSparsity, PruningSchedule, as_schedule
from .structured import depthwise_only, is_prunable, parse_structure, prunable_weights, unprunable_reason
from .wrapper import PruneWrapper


@dataclass
class PruningConfig:
    """The options of ``prune_model``, as one object (``prune_model(model, config=...)``).

    Keras-serializable through ``get_config``/``from_config``.

    Attributes:
        schedule: A `PolynomialDecay`/`ConstantSparsity`, or a sparsity in [0, 1) (constant from step 0); its final
            sparsity is the overall target the distribution shares out. None is allowed with an N:M structure (a
            constant 1 − N/M) or an explicit distribution (each layer's sparsity, constant from step 0).
        distribution: ``"uniform"`` (every layer gets the target), ``"log"`` (log-proportional: big layers pruned
            harder, the total still the target; see ``log_proportional``) or ``{layer name: sparsity}`` (only those
            layers are pruned).
        structure: None (unstructured), ``"N:M"`` such as ``"2:4"`` (keep N of every M input channels' weights;
            the fixed sparsity 1 − N/M replaces the schedule's target, which then only says when masks apply), or
            ``"channels"`` (whole filters, with the BatchNorm and depthwise channels after them; channels joined by
            a residual Add pruned together).
        min_weights: With a uniform or log distribution, layers with fewer weights are left dense (the first conv,
            say).
        skip_depthwise: Leave depthwise kernels dense (unstructured pruning only).
        skip: Names of more layers to leave dense.
        max_sparsity: The cap on one layer's sparsity under the log distribution, in (0, 1).

    Example:
        ```python
        config = keras_eff.pruning.PruningConfig(keras_eff.PolynomialDecay(0.0, 0.8, 0, 2000), distribution="log")
        pruned = keras_eff.prune_model(model, config=config)
        ```
    """

    schedule: object = None
    distribution: object = "uniform"
    structure: str | None = None
    min_weights: int = 1024
    skip_depthwise: bool = True
    skip: tuple = field(default_factory=tuple)
    max_sparsity: float = 0.98

    def get_config(self):
        config = asdict(self)
        config["schedule"] = None if self.schedule is None else keras.saving.serialize_keras_object(self.schedule)
        config["skip"] = list(self.skip)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("schedule") is not None:
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        config["skip"] = tuple(config.get("skip", ()))
        return cls(**config)


def _size(layer) -> int:
    return int(sum(np.prod(w.shape) for w in prunable_weights(layer).values()))


def _plan(model, cfg: PruningConfig):
    """{layer name: (schedule or None, structure, group)} and {layer name: why it is left dense}."""
    structure = parse_structure(cfg.structure)
    all_layers = graph_layers(model)
    names = {layer.name: layer for layer in all_layers}
    listing = ", ".join(sorted(names))
    for name in cfg.skip:
        if name not in names:
            raise ValueError(
                f"skip names layer {name!r}, which model {model.name!r} does not have; its layers are: {listing}"
            )
    schedule: PruningSchedule
    if cfg.schedule is None:
        if isinstance(structure, tuple):
            schedule = ConstantSparsity(1 - structure[1] / structure[2], begin_step=0)
        elif isinstance(cfg.distribution, dict):
            schedule = ConstantSparsity(0.5, begin_step=0)
        else:
            raise ValueError(
                "prune_model needs a schedule: e.g. keras_eff.pruning.PolynomialDecay(0.0, 0.8, "
                "begin_step=0, end_step=1000), or a sparsity such as 0.8 (constant from step 0)"
            )
    else:
        schedule = as_schedule(cfg.schedule)
        if isinstance(structure, tuple):
            _check_nm_target(structure, schedule.target, "the schedule's target sparsity")
    skipped: dict[str, str] = {}  # layer name -> why it stays dense
    explicit = cfg.distribution if isinstance(cfg.distribution, dict) else None  # {layer name: sparsity}
    if explicit is not None:
        for name, s in explicit.items():
            if name not in names:
                raise ValueError(
                    f"distribution names layer {name!r}, which model {model.name!r} does not have; "
                    f"its layers are: {listing}"
                )
            reason = unprunable_reason(names[name], structure)
            if reason:
                raise ValueError(reason)
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
                raise ValueError(f"sparsity for layer {name!r} must lie in [0, 1), got {s!r}")
            if isinstance(structure, tuple):
                _check_nm_target(structure, s, f"distribution[{name!r}]")
        candidates = [n for n in explicit if n not in cfg.skip]
    else:
        if cfg.distribution not in dist.DISTRIBUTIONS and cfg.distribution != "log_proportional":
            dist.resolve(cfg.distribution, {}, 0.0)  # raises, naming the allowed values
        if isinstance(structure, tuple) and cfg.distribution != "uniform":
            raise ValueError(
                f"N:M pruning has a fixed sparsity of {1 - structure[1] / structure[2]:g}; use "
                f"distribution='uniform' with it"
            )
        candidates = []
        for layer in all_layers:
            if not is_prunable(layer):
                continue
            reason = unprunable_reason(layer, structure)
            if layer.name in cfg.skip:
                reason = "skipped by request"
            elif reason is None and structure is None and cfg.skip_depthwise and depthwise_only(layer):
                reason = "depthwise kernel (skip_depthwise=True)"
            elif reason is None and _size(layer) < cfg.min_weights:
                reason = f"small: {_size(layer):,} weights < min_weights={cfg.min_weights:,}"
            if reason:
                skipped[layer.name] = reason
            else:
                candidates.append(layer.name)
    plan: dict[str, tuple[PruningSchedule | None, object, str | None]] = {}  # see the docstring
    if structure == "channels":
        groups = channel_groups(model, set(candidates))
        for g in groups:
            held = [n for n in g.producers if n in cfg.skip]
            if held and g.reason is None:
                g.reason = (
                    f"its channels are joined (through a residual Add) with those of {held[0]!r}, which "
                    f"skip keeps dense"
                )
        sizes = {n: _size(names[n]) for g in groups for n in g.producers}
        usable = [g for g in groups if g.reason is None]
        for g in groups:
            if g.reason:
                for n in g.producers:
                    if explicit is not None and n in explicit:
                        raise ValueError(f"cannot prune the channels of layer {n!r}: {g.reason}")
                    skipped.setdefault(n, g.reason)
        targets = _targets(cfg, schedule, {n: sizes[n] for g in usable for n in g.producers if n in candidates})
        for g in usable:
            s = min(targets[n] for n in g.producers if n in targets)
            for n in g.producers:
                plan[n] = (schedule.with_target(s), structure, g.name)
                skipped.pop(n, None)
            for n in g.followers:
                plan[n] = (None, structure, g.name)
    else:
        targets = _targets(cfg, schedule, {n: _size(names[n]) for n in candidates})
        for n in candidates:
            plan[n] = (schedule.with_target(targets[n]), structure, None)
    if not plan:
        raise ValueError(
            f"no layer of model {model.name!r} can be pruned with these settings: "
            + (
                "; ".join(f"{k}: {v}" for k, v in skipped.items())
                or "it has no prunable layer (conv, dense or another layer with a kernel)"
            )
        )
    return plan, skipped


def _check_nm_target(structure, sparsity, what) -> None:
    """N:M keeps N of every M weights: its sparsity is 1 − N/M whatever else is asked; a different one is refused."""
    _, n, m = structure
    fixed = 1 - n / m
    if abs(float(sparsity) - fixed) > 1e-6:
        raise ValueError(
            f"structure '{n}:{m}' keeps {n} of every {m} weights, a sparsity of {fixed:g}, but "
            f"{what} is {float(sparsity):g}: leave the schedule out (the default is "
            f"ConstantSparsity({fixed:g})), give one whose target is {fixed:g} (its steps then say when "
            f"the N:M masks apply), or choose N:M with 1 - N/M = {float(sparsity):g}"
        )


def _targets(cfg, schedule, sizes):
    if not sizes:
        return {}
    if isinstance(cfg.distribution, dict):
        return {n: float(cfg.distribution[n]) for n in sizes}
    return dist.resolve(cfg.distribution, sizes, schedule.target, cfg.max_sparsity)


@config_keywords(
    PruningConfig, ("schedule", "distribution", "structure", "min_weights", "skip_depthwise", "skip", "max_sparsity")
)
def prune_model(
    model,
    schedule=None,
    distribution="uniform",
    structure=None,
    *,
    min_weights=1024,
    skip_depthwise=True,
    skip=(),
    max_sparsity=0.98,
    config: PruningConfig | None = None,
):
    """Wraps every prunable layer of a copy of ``model`` for magnitude pruning.

    The overall target sparsity (the schedule's final one) is shared among the layers by ``distribution``; each
    wrapped layer gets the schedule with its own target. Train the result with
    ``callbacks=[keras_eff.callbacks.UpdatePruning()]``, then ``keras_eff.strip`` it (``remove_pruned_channels=True``
    to physically drop pruned filters). ``keras_eff.sparsity_report`` says which layers were left dense, and why.

    Args:
        model: A built Functional or Sequential model (nested models included), float: not quantized and without
            keras-eff wrappers. Not changed.
        schedule: A `PolynomialDecay`/`ConstantSparsity` or a sparsity in [0, 1) (constant from step 0); may be
            None with an N:M structure or a dict distribution (see `PruningConfig`).
        distribution: ``"uniform"``, ``"log"`` (log-proportional) or ``{layer name: sparsity}``.
        structure: None (unstructured), ``"N:M"`` such as ``"2:4"``, or ``"channels"``.
        min_weights: Layers with fewer weights are left dense (uniform and log distributions).
        skip_depthwise: Leave depthwise kernels dense (unstructured pruning).
        skip: Names of layers to leave dense.
        max_sparsity: The cap on one layer's sparsity under the log distribution.
        config: A `PruningConfig` or a dict of its fields; the options above that are given override its fields.

    Returns:
        A new Keras model whose pruned layers are wrapped in `PruneWrapper` (channel followers too).

    Raises:
        ValueError: If no layer can be pruned with these settings (the message says why for each), ``skip`` or the
            distribution names a layer the model does not have or one that cannot be pruned, a sparsity is out of
            range, the distribution is unknown, an N:M structure comes with a non-uniform distribution, no schedule
            is given where one is needed, or ``model`` is quantized or still holds keras-eff wrappers.
        TypeError: If ``schedule`` is not a schedule or a number, ``model`` is not a Keras model, or ``config`` is
            neither a `PruningConfig` nor a dict.
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model (use ``keras_eff.prune`` on
            the layers of a subclassed model).

    Example:
        ```python
        pruned = keras_eff.prune_model(model, keras_eff.PolynomialDecay(0.0, 0.75, 0, 1000), distribution="log")
        pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        pruned.fit(x, y, epochs=4, callbacks=[keras_eff.callbacks.UpdatePruning()])
        final = keras_eff.strip(pruned)
        ```
    """
    cfg = config or PruningConfig(
        schedule, distribution, structure, min_weights, skip_depthwise, tuple(skip), max_sparsity
    )
    if isinstance(model, keras.Model):
        refuse_rewritten(model, "prune", "sparsity")
        check_finite_weights(model, "pruning it")
    plan, _ = _plan(model, cfg)
    hidden = hidden_layers(model, is_prunable)
    if hidden:
        warnings.warn(
            f"prune_model: layers {describe_hidden(hidden)} call prunable layers, which stay dense: "
            f"keras-eff prunes the layers of the model's graph. In the custom layer's code, wrap them with "
            f"keras_eff.prune(layer, schedule), or declare the custom layer prunable (keras_eff_facts, "
            f"docs/layers.md); sparsity_report lists them",
            stacklevel=2,
        )

    def transform(rb, node, args, kwargs):
        op = node.operation
        if not isinstance(op, layers.Layer) or isinstance(op, keras.Model) or op.name not in plan:
            return None
        layer_schedule, layer_structure, group = plan[op.name]

        def wrap(a, k):  # once for a layer called several times: its calls share the wrapper, weights and masks
            inner = clone_layer(op)
            wrapper = PruneWrapper(inner, schedule=layer_schedule, structure=layer_structure, group=group)
            out = wrapper(*a, **k)
            copy_weights(op, inner)
            return wrapper, out

        return rb.call_shared(op, args, kwargs, wrap)

    return rebuild(model, transform)
