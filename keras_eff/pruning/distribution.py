"""Per-layer sparsity targets: how an overall target is shared among the layers being pruned.

- ``"uniform"``: every layer gets the target.
- ``"log"`` (log-proportional, as in Arm's pruning guidance): layer i with n_i weights gets s_i = α·log n_i with
  α = s·Σn_i / Σ(n_i·log n_i), so that the pruned layers together hold exactly a fraction s of zeros. Big layers are
  pruned harder than small ones. A layer's sparsity is capped at ``max_sparsity``; what the cap removes is spread
  over the other layers (α solved again over them) so the total still holds.
- ``{layer name: sparsity}``: explicit targets; layers not named are not pruned.
"""

from __future__ import annotations

import math

DISTRIBUTIONS = ("uniform", "log")


def uniform(sizes: dict, target: float) -> dict:
    """Gives every layer the overall target (``distribution="uniform"``).

    Args:
        sizes: ``{layer name: number of weights}`` of the layers being pruned.
        target: The overall sparsity.

    Returns:
        ``{layer name: target}`` for every layer of ``sizes``.

    Example:
        ```python
        keras_eff.pruning.uniform({"conv": 864, "dense": 40960}, 0.8)  # {'conv': 0.8, 'dense': 0.8}
        ```
    """
    return {name: float(target) for name in sizes}


def log_proportional(sizes: dict, target: float, max_sparsity: float = 0.98) -> dict:
    """Shares an overall sparsity among layers in proportion to log(number of weights) (``distribution="log"``).

    Layer i with n_i weights gets s_i = α·log n_i, with α chosen so that the layers together hold exactly a fraction
    ``target`` of zeros: big layers are pruned harder than small ones. Layers whose share would exceed
    ``max_sparsity`` are held at it and α is solved again over the others.

    Args:
        sizes: ``{layer name: number of weights}`` of the layers being pruned, each at least 1.
        target: The overall sparsity, at most ``max_sparsity``.
        max_sparsity: The cap on any one layer's sparsity, in (0, 1).

    Returns:
        ``{layer name: sparsity}`` whose weight-weighted mean is ``target``.

    Raises:
        ValueError: If ``max_sparsity`` lies outside (0, 1), ``target`` exceeds it, a layer has no weights, or the
            target cannot be met with each layer capped.

    Example:
        ```python
        keras_eff.pruning.log_proportional({"conv": 864, "dense": 40960}, 0.8)
        ```
    """
    if not 0 < max_sparsity < 1:
        raise ValueError(f"max_sparsity must lie in (0, 1), got {max_sparsity}")
    if target > max_sparsity:
        raise ValueError(f"target sparsity {target} is above max_sparsity {max_sparsity}")
    bad = {name: n for name, n in sizes.items() if int(n) < 1}
    if bad:
        raise ValueError(f"layers with no weights cannot share a sparsity target: {sorted(bad)}")
    total = sum(sizes.values())
    capped: dict = {}
    while True:
        free = {name: n for name, n in sizes.items() if name not in capped}
        budget = target * total - sum(max_sparsity * sizes[name] for name in capped)
        weight = sum(n * math.log(n) for n in free.values())
        if not free or weight <= 0:
            if abs(budget) <= 1e-9 * total:
                return {**dict.fromkeys(free, 0.0), **capped}
            raise ValueError(
                f"target sparsity {target} cannot be reached with each layer capped at "
                f"{max_sparsity}: too few weights in layers that can take more zeros"
            )
        alpha = budget / weight
        out = {name: alpha * math.log(n) for name, n in free.items()}
        over = {name for name, s in out.items() if s > max_sparsity}
        if not over:
            return {**out, **capped}
        capped.update(dict.fromkeys(over, max_sparsity))


def resolve(distribution, sizes: dict, target: float, max_sparsity: float = 0.98) -> dict:
    """{layer name: sparsity} for the layers in ``sizes`` ({name: number of weights})."""
    if isinstance(distribution, dict):
        return dict(distribution)
    if distribution == "uniform":
        return uniform(sizes, target)
    if distribution in ("log", "log_proportional"):
        return log_proportional(sizes, target, max_sparsity)
    raise ValueError(
        f"unknown distribution {distribution!r}: use 'uniform', 'log' (log-proportional) or a dict "
        f"{{layer name: sparsity}}"
    )


def weighted_sparsity(sparsities: dict, sizes: dict) -> float:
    """The fraction of zeros over all the layers together."""
    total = sum(sizes[name] for name in sparsities)
    return sum(sparsities[name] * sizes[name] for name in sparsities) / total if total else 0.0
