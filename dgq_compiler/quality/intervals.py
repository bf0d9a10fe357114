"""95% intervals of the quality metrics, deterministic and paired across configurations.

Every configuration is sampled with the same prompts and seeds, so image i of one configuration and image i
of another answer the same request; the intervals of a difference use that pairing.

- Means (alignment, per attribute): percentile bootstrap. One index matrix drawn from a seed resamples every
  configuration; the same rows of two configurations' replicates give a paired interval of their difference.
- Plug-in statistics of a whole image set (Fréchet distance, IS-like): the jackknife (leave one image out),
  normal interval. A bootstrap resample repeats images, which shrinks the set's covariance and class
  marginals: on 32 images the Fréchet replicates lay entirely above the statistic (957 against replicates
  1015..1517), so their percentiles are no interval for it. Leaving one image out keeps 31 distinct ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float    # the statistic on the sample itself
    low: float
    high: float

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}

    def separates_from(self, other: "Interval") -> bool:
        """The two intervals do not overlap."""
        return self.high < other.low or other.high < self.low

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] row indices drawn with replacement; the same (n, resamples, seed) give the same matrix."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(value: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    """The `level` central interval of bootstrap replicates (NaN replicates, a resample where the mean has
    no item, are skipped)."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(float(value), float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high))


def mean_replicates(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The mean of `values` (NaN = the item does not count) over each bootstrap resample."""
    picked = np.asarray(values, dtype=np.float64)[indices]
    counts = np.sum(np.isfinite(picked), axis=1)
    sums = np.nansum(picked, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def mean_interval(values: np.ndarray, indices: np.ndarray, level: float = LEVEL) -> tuple[Interval, np.ndarray]:
    """(percentile bootstrap interval of the mean of `values`, its replicates)."""
    values = np.asarray(values, dtype=np.float64)
    replicates = mean_replicates(values, indices)
    point = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return percentile_interval(point, replicates, level), replicates


def leave_one_out(statistic: Callable[[np.ndarray], float], data: np.ndarray) -> np.ndarray:
    """`statistic` of `data` without row i, for every i."""
    return np.array([statistic(np.delete(data, i, axis=0)) for i in range(len(data))], dtype=np.float64)


def jackknife_interval(value: float, loo: np.ndarray, level: float = LEVEL,
                       bounds: tuple[float, float] = (-np.inf, np.inf)) -> Interval:
    """value ± z * jackknife standard error from the leave-one-out values, kept within the statistic's `bounds`."""
    loo = np.asarray(loo, dtype=np.float64)
    n = len(loo)
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))) if n > 1 else float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    low, high = np.clip([value - z * se, value + z * se], *bounds)
    return Interval(float(value), float(low), float(high))
