"""Collaborative optimization: quantization-aware training that keeps what pruning and clustering made.

``preserve="sparsity"``: a fixed 0/1 mask multiplies the kernel before it is quantized, so weights that were zero
stay zero (and a zero stays an int8 zero: weights are symmetric). ``preserve="clusters"``: the kernel is held as
``gather(centroids, indices)`` with one trainable centroid per distinct value of the kernel as it came in (the
non-zero values with "sparsity" too), so training moves the shared values and never splits them. In the int8 file a
kernel with per-tensor scale then holds at most as many distinct values as it has centroids; with per-channel scales
(conv and depthwise layers, or a folded BatchNorm) each output channel does.

The state lives in the QuantizeWrapper as non-trainable mask and index variables and a trainable centroid variable;
this module creates, fills and reads them.
"""

from __future__ import annotations

import numpy as np
from keras import ops

PRESERVE = ("sparsity", "clusters")


def check_preserve(preserve) -> tuple:
    """``preserve`` as a sorted tuple of "sparsity" / "clusters" (a string, an iterable, or None/() for none)."""
    if preserve is None:
        return ()
    items = (preserve,) if isinstance(preserve, str) else tuple(preserve)
    unknown = [p for p in items if p not in PRESERVE]
    if unknown:
        raise ValueError(
            f"preserve={preserve!r}: unknown {unknown}; choose 'sparsity', 'clusters' or both "
            f"(('sparsity', 'clusters'))"
        )
    return tuple(p for p in PRESERVE if p in items)


def _structure(kernel, preserve):
    """(mask or None, centroids or None, indices or None) describing a numpy kernel."""
    kernel = np.asarray(kernel, np.float32)
    mask = (kernel != 0).astype(np.float32) if "sparsity" in preserve else None
    if "clusters" not in preserve:
        return mask, None, None
    held = kernel[kernel != 0] if mask is not None else kernel.reshape(-1)
    centroids = np.unique(held)
    if centroids.size == 0:  # an all-zero kernel: one (masked) centroid
        centroids = np.zeros(1, np.float32)
    indices = np.searchsorted(centroids, kernel).clip(0, centroids.size - 1).astype(np.int32)
    return mask, centroids.astype(np.float32), indices


def centroid_counts(layer, names, preserve) -> dict | None:
    """{kernel name: number of centroids} that preserving clusters will hold for ``layer``'s current kernels."""
    if "clusters" not in preserve:
        return None
    return {n: int(_structure(np.asarray(getattr(layer, n)), preserve)[1].size) for n in names}


def build(wrapper, names):
    """Creates the wrapper's preservation variables; fills them from the current kernels unless the centroid
    counts were given (``quantize_model`` fills them after copying the weights; loading restores them)."""
    preserve, layer = wrapper.preserve, wrapper.layer
    given = wrapper.n_centroids is not None
    if not given:
        wrapper.n_centroids = centroid_counts(layer, names, preserve)
    wrapper.preserved = {}
    for n in names:
        kernel = getattr(layer, n)
        state = {}
        if "sparsity" in preserve:
            state["mask"] = wrapper.add_weight(
                name=f"{n}_mask",
                shape=kernel.shape,
                initializer="ones",
                trainable=False,
                dtype="float32",
                aggregation="only_first_replica",
            )
        if "clusters" in preserve:  # centroids trained by the optimizer; mask and indices fixed during QAT
            state["centroids"] = wrapper.add_weight(
                name=f"{n}_centroids", shape=(wrapper.n_centroids[n],), initializer="zeros", dtype="float32"
            )
            state["indices"] = wrapper.add_weight(
                name=f"{n}_indices",
                shape=kernel.shape,
                dtype="int32",
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
            kernel.trainable = False  # the centroids are trained instead
        wrapper.preserved[n] = state
    if not given:
        fill(wrapper)


def fill(wrapper):
    """Sets mask, centroids and indices from the inner layer's current kernels."""
    for n, state in wrapper.preserved.items():
        mask, centroids, indices = _structure(np.asarray(getattr(wrapper.layer, n)), wrapper.preserve)
        if mask is not None:
            state["mask"].assign(mask)
        if centroids is not None:
            if centroids.size != state["centroids"].shape[0]:
                raise ValueError(
                    f"layer {wrapper.layer.name!r}: its {n} now holds {centroids.size} distinct values, "
                    f"the wrapper was built for {state['centroids'].shape[0]}"
                )
            state["centroids"].assign(centroids)
            state["indices"].assign(indices)


def kernel_value(wrapper, name):
    """The kernel the wrapper quantizes: gathered from the centroids and/or masked."""
    state = getattr(wrapper, "preserved", {}).get(name)
    if not state:
        return getattr(wrapper.layer, name)
    frozen = getattr(wrapper, "_frozen_kernels", None) or {}
    if name in frozen and wrapper._export_view:  # computed before an export's trace (``QuantizeWrapper.export_view``)
        return frozen[name].value()
    kernel = ops.take(state["centroids"], state["indices"]) if "centroids" in state else getattr(wrapper.layer, name)
    return kernel * state["mask"] if "mask" in state else kernel


def describe(wrapper) -> str:
    """What a wrapper preserves, for the quantization report: "sparsity 50.0%, 16 clusters"."""
    parts = []
    for n, state in wrapper.preserved.items():
        if "mask" in state:
            parts.append(f"{n} sparsity {1 - float(np.mean(np.asarray(state['mask']))):.1%}")
        if "centroids" in state:
            parts.append(f"{n} {state['centroids'].shape[0]} clusters")
    return ", ".join(parts)
