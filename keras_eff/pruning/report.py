"""sparsity_report: the zeros of each prunable layer and in total, for pruned and stripped models alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import channel_groups, graph_layers, hidden_layers, release
from ..reporting import markdown_table
from ..strip import strip
from .callbacks import pruning_wrappers
from .structured import depthwise_only, format_structure, is_prunable, prunable_weights, unprunable_reason


@dataclass
class SparsityReport:
    """The zeros of each prunable layer of a model and in total, as ``sparsity_report`` measures them.

    ``str(report)`` is a Markdown table with the two totals.

    Attributes:
        rows: One dict per prunable layer (and per custom layer calling prunable layers: their kernels), with the
            keys layer, type, weights, zeros, sparsity, target (the
            schedule's final sparsity; None for a layer not wrapped), structure and status (``"pruned"``,
            ``"dense: <why>"`` in a pruned model, or ``"not wrapped"`` in a model without pruning wrappers).
        pruned_sparsity: The fraction of zeros over the pruned layers' weights.
        total_sparsity: The fraction of zeros over all prunable layers' kernels.
        skipped: ``{layer name: why it is dense}`` for the prunable layers a pruned model left unwrapped.
    """

    rows: list = field(default_factory=list)
    pruned_sparsity: float = 0.0
    total_sparsity: float = 0.0
    skipped: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The report as JSON-ready types.

        Returns:
            A dict with the keys rows, pruned_sparsity, total_sparsity and skipped.
        """
        return {
            "rows": self.rows,
            "pruned_sparsity": self.pruned_sparsity,
            "total_sparsity": self.total_sparsity,
            "skipped": self.skipped,
        }

    def __str__(self):
        table = markdown_table(
            self.rows, ["layer", "type", "weights", "zeros", "sparsity", "target", "structure", "status"]
        )
        return (
            f"{table}\npruned layers: {self.pruned_sparsity:.2%} zeros; all prunable kernels: "
            f"{self.total_sparsity:.2%} zeros\n"
        )


def _channel_groups(model) -> dict:
    """{producer name: its ChannelGroup} of the model's plain form (wrappers stripped), for channel pruning's
    reasons: a group joined with a model input or output, or through a layer channels cannot pass, stays dense."""
    plain = strip(model)
    try:
        return {n: g for g in channel_groups(plain) for n in g.producers}
    finally:
        release(plain)


def _dense_reason(layer, structure, size, groups) -> str:
    """Why a prunable layer of a pruned model is not wrapped: the registry's reason where it cannot take the
    model's structure (or its channel group's reason), else which of prune_model's selection rules can have left it
    out."""
    reason = unprunable_reason(layer, structure)
    if reason:
        return reason
    group = groups.get(layer.name)
    if group is not None and group.reason:
        return group.reason
    rules = ["below min_weights", "named in skip"]
    if structure is None and depthwise_only(layer):
        rules.insert(0, "a depthwise kernel (skip_depthwise)")
    joined = (
        ""
        if group is None or len(group.producers) < 2
        else (
            f"; its channels are joined with those of {', '.join(p for p in group.producers if p != layer.name)}, "
            f"pruned together or not at all"
        )
    )
    return f"not selected ({size:,} weights; {', '.join(rules[:-1])} or {rules[-1]}{joined})"


def _row(layer, values, status, wrapper=None) -> dict:
    """One report row: the zeros of ``values`` (arrays) counted under ``layer``'s name."""
    n = int(sum(v.size for v in values))
    zeros = int(sum(np.count_nonzero(v == 0) for v in values))
    return {
        "layer": layer.name,
        "type": type(layer).__name__,
        "weights": n,
        "zeros": zeros,
        "sparsity": zeros / n if n else 0.0,
        "target": None if wrapper is None else float(wrapper.schedule.target),
        "structure": None if wrapper is None else (format_structure(wrapper.structure) or "unstructured"),
        "status": status,
    }


def sparsity_report(model) -> SparsityReport:
    """Counts the zeros of each prunable layer of a model and in total, for pruned and stripped models alike.

    For a pruned model the masked weights are counted (a channel-pruned layer's kernel only), for a plain one the
    kernels. In a pruned model, each prunable layer left unwrapped says why, read from the model: the layer registry's
    reason where the layer cannot take the model's structure, else that ``prune_model`` did not select it (below
    ``min_weights``, a depthwise kernel under ``skip_depthwise``, named in ``skip``). A custom layer that calls
    prunable layers (a residual block's conv) has a row of their kernels, dense: ``prune_model`` rewrites the model's
    graph and does not reach inside it. Computed from the model alone, so a pruned model saved and loaded again gives
    the same report.

    Args:
        model: A Functional or Sequential model, pruned (holding `PruneWrapper` layers) or plain. Not changed.

    Returns:
        A `SparsityReport`.

    Raises:
        UnsupportedModelError: If ``model`` is subclassed or an unbuilt Sequential model.

    Example:
        ```python
        print(keras_eff.sparsity_report(keras_eff.strip(pruned)))
        ```
    """
    wrappers = {w.layer.name: w for w in pruning_wrappers(model)}
    structures = {repr(w.structure): w.structure for w in wrappers.values()}
    structure = next(iter(structures.values())) if len(structures) == 1 else None
    skipped = {}
    groups = None
    rows, inner = [], {id(w.layer) for w in wrappers.values()}
    wrapper_ids = {id(w) for w in wrappers.values()}
    hidden = hidden_layers(model, is_prunable, reached=lambda l: is_prunable(l) or id(l) in wrapper_ids)
    for layer in graph_layers(model):
        w = layer if layer in wrappers.values() else None
        target = layer if w is None else w.layer
        if id(target) in inner and w is None:
            continue
        if layer.name in hidden:  # a custom layer calling prunable layers: prune_model does not reach them
            sublayers = [s for s in layer._flatten_layers(include_self=False) if is_prunable(s)]
            kernels = [np.asarray(v) for s in sublayers for v in prunable_weights(s).values()]
            reason = (
                f"the layers it calls ({', '.join(hidden[layer.name][1])}) are not pruned: prune_model rewrites the "
                f"model's graph only"
            )
            if wrappers:
                skipped[layer.name] = reason
            rows.append(_row(layer, kernels, f"dense: {reason}" if wrappers else "not wrapped"))
            continue
        if not is_prunable(target) or (w is not None and w.is_follower):
            continue
        if w is not None:
            values = w.pruned_weights()
            if w.structure == "channels":
                values = {"kernel": values["kernel"]}
        else:
            values = {n: np.asarray(v) for n, v in prunable_weights(target).items()}
        if w is not None:
            status = "pruned"
        elif wrappers:
            if groups is None:
                groups = _channel_groups(model) if structure == "channels" else {}
            skipped[target.name] = _dense_reason(target, structure, sum(v.size for v in values.values()), groups)
            status = f"dense: {skipped[target.name]}"
        else:
            status = "not wrapped"
        rows.append(_row(target, list(values.values()), status, w))
    pruned = [r for r in rows if r["status"] == "pruned"]

    def frac(rs):
        total = sum(r["weights"] for r in rs)
        return sum(r["zeros"] for r in rs) / total if total else 0.0

    return SparsityReport(rows, frac(pruned), frac(rows), skipped)
