"""Deterministic K-means on small 2-D feature sets (the (min, max) range of each channel or pixel).

k-means++ initialisation from a seeded generator, Lloyd iterations in float64, ties to the lower
cluster index; groups are then renumbered by their centroid (width hi - lo, then hi, then lo), so
the same features always give the same group map, and group 0 is the narrowest range.
"""
from __future__ import annotations

import numpy as np


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Group labels [N] in 0..k'-1 (k' = min(k, distinct rows)); every label in range is used."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    distinct, inverse = np.unique(x, axis=0, return_inverse=True)
    k = max(1, min(k, len(distinct)))
    if k == len(distinct):  # one group per distinct point: exact, no iterations needed
        return _renumber(x, inverse.reshape(-1), k)
    centroids = _kmeans_pp(x, distinct, k, np.random.default_rng(seed))
    labels = np.full(n, -1)
    for _ in range(iters):
        new = _nearest(x, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    labels = _nearest(x, centroids)
    used = np.unique(labels)  # drop clusters that ended empty; labels stay contiguous
    labels = np.searchsorted(used, labels)
    return _renumber(x, labels, len(used))


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=1)  # first minimum: ties go to the lower index


def _kmeans_pp(x: np.ndarray, distinct: np.ndarray, k: int, rng) -> np.ndarray:
    """k-means++ seeding over the distinct points (duplicates would bias nothing but the draw)."""
    centroids = [distinct[rng.integers(len(distinct))]]
    d2 = ((distinct - centroids[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            break
        j = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
        j = min(j, len(distinct) - 1)
        centroids.append(distinct[j])
        d2 = np.minimum(d2, ((distinct - distinct[j]) ** 2).sum(axis=1))
    return np.array(centroids, dtype=np.float64)


def _renumber(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Stable group order: by centroid width (hi - lo), then hi, then lo."""
    cents = np.array([x[labels == j].mean(axis=0) for j in range(k)])
    order = np.lexsort((cents[:, 0], cents[:, 1], cents[:, 1] - cents[:, 0]))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[labels].astype(np.int32)
