"""Choosing centroids for a weight tensor and assigning each weight to its nearest one (numpy and scikit-learn).

Inits: ``kmeans++`` and ``random`` run scikit-learn's k-means (Lloyd) on the weight values from those seedings;
``linear`` spaces the centroids evenly over [min, max]; ``density`` puts them at evenly spaced quantiles of the
values (the inverse of their empirical CDF), so dense regions get more centroids. With ``keep_zero`` centroid 0 is
pinned at 0.0 for the weights that are exactly zero and the other k−1 centroids cluster the non-zero weights.
"""

from __future__ import annotations

import warnings

import numpy as np

INITS = ("kmeans++", "linear", "density", "random")


def check_init(init, where: str = "") -> str:
    if init not in INITS:
        raise ValueError(f"{where}init={init!r} is unknown; choose one of {', '.join(repr(i) for i in INITS)}")
    return init


HISTOGRAM_ABOVE = 1 << 20
HISTOGRAM_BINS = 1 << 16


def fit_centroids(values, k: int, init: str = "kmeans++", seed: int = 0) -> np.ndarray:
    """Chooses ``k`` centroids for a set of weight values.

    ``"kmeans++"`` and ``"random"`` run scikit-learn's k-means (Lloyd, one run, at most 100 iterations) from those
    seedings. Above `HISTOGRAM_ABOVE` values (a 4096 × 4096 dense kernel: 16.8 M, 21 s of k-means) it runs on a
    histogram of them instead, `HISTOGRAM_BINS` equal bins over [min, max] weighted by their counts (0.2 s): each
    value counts at its bin's centre, at most 1/131,072 of the range away, and the fit's error is that on the values
    within the seed-to-seed spread. ``"linear"`` spaces the centroids evenly over [min, max]; ``"density"`` puts them
    at evenly spaced quantiles of the values, so dense regions get more centroids.

    Args:
        values: The weight values (any shape; flattened).
        k: The number of centroids.
        init: ``"kmeans++"``, ``"linear"``, ``"density"``; any other value runs k-means from a random seeding.
        seed: The k-means seed.

    Returns:
        A sorted float32 array of ``k`` centroids, all within [min, max] of the values. With ``k`` or fewer distinct
        values, those values, the last repeated; with no values, zeros.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(k, np.float32)
    distinct = np.unique(values)
    if distinct.size <= k:
        return np.concatenate([distinct, np.repeat(distinct[-1], k - distinct.size)]).astype(np.float32)
    if init == "linear":
        c = np.linspace(values.min(), values.max(), k)
    elif init == "density":
        c = np.quantile(values, (np.arange(k) + 0.5) / k)
    else:
        from sklearn.cluster import KMeans  # noqa: PLC0415 - start-up: scikit-learn (~1 s, -X importtime)

        points, weights, tol = values, None, 1e-4  # (scikit-learn's default tolerance)
        if values.size > HISTOGRAM_ABOVE:
            counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
            points, weights = ((edges[:-1] + edges[1:]) / 2)[counts > 0], counts[counts > 0]
            # scikit-learn scales its tolerance by the points' variance, unweighted: the same stop as on the values
            tol *= float(np.var(values)) / max(float(np.var(points)), 1e-30)
        km = KMeans(
            n_clusters=k,
            init="k-means++" if init == "kmeans++" else "random",
            n_init=1,
            random_state=seed,
            max_iter=100,
            tol=tol,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on near-duplicate values
            km.fit(points.reshape(-1, 1), sample_weight=weights)
        c = np.clip(km.cluster_centers_.reshape(-1), values.min(), values.max())
    return np.sort(c).astype(np.float32)


def nearest(values, centroids) -> np.ndarray:
    """Index of the nearest centroid for each value (ties to the lower one); ``centroids`` sorted, 1-D."""
    centroids = np.asarray(centroids, np.float64)
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, np.asarray(values, np.float64), side="left").astype(np.int32)


def cluster_values(values, k: int, init: str, keep_zero: bool, seed: int = 0):
    """Clusters one group of weights (a kernel, or one output channel of it).

    Args:
        values: The weights.
        k: The number of centroids.
        init: ``"kmeans++"``, ``"linear"``, ``"density"`` or ``"random"`` (see `fit_centroids`).
        keep_zero: Pin centroid 0 at 0.0 for the weights that are exactly zero (where there are any) and cluster the
            others with the remaining ``k - 1`` centroids.
        seed: The k-means seed.

    Returns:
        ``(centroids, indices)``: ``k`` float32 centroids, and for each weight the int32 index of its nearest
        centroid (ties to the lower one), shaped like ``values``.
    """
    values = np.asarray(values, np.float32)
    flat = values.reshape(-1)
    if keep_zero and np.any(flat == 0):
        nonzero = flat[flat != 0]
        rest = fit_centroids(nonzero, k - 1, init, seed)
        centroids = np.concatenate([[0.0], rest]).astype(np.float32)
        idx = 1 + nearest(nonzero, rest) if nonzero.size else np.zeros(0, np.int32)
        indices = np.zeros(flat.shape, np.int32)
        indices[flat != 0] = idx
        return centroids, indices.reshape(values.shape)
    centroids = fit_centroids(flat, k, init, seed)
    return centroids, nearest(flat, centroids).reshape(values.shape)


def channel_ids(shape, channel_shape) -> np.ndarray:
    """For each position of a kernel, its output channel: ``channel_shape`` is the broadcast shape of a
    per-channel vector (``keras_eff.layers.channel_shape``)."""
    n = int(np.prod(channel_shape))
    return np.broadcast_to(np.arange(n, dtype=np.int32).reshape(channel_shape), shape).copy()
