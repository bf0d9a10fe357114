"""Exactness bounds of integer accumulations, the cheapest exact accumulation type, and the accumulator width."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from simulator.errors import SimulatorError

FLOAT32_EXACT = 1 << 24   # float32 represents every integer below this exactly
FLOAT64_EXACT = 1 << 53
INT64_EXACT = 1 << 63


def accumulation_bound(k: int, a_max: int, b_max: int) -> int:
    """Largest |partial sum| of k products with |a| <= a_max, |b| <= b_max."""
    return int(k) * int(a_max) * int(b_max)


def accumulate_dtype(k: int, a_max: int, b_max: int):
    """The cheapest type in which every partial sum of k products is provably an exact integer."""
    bound = accumulation_bound(k, a_max, b_max)
    if bound < FLOAT32_EXACT:  # small split-K groups: single-precision BLAS is exact too
        return np.float32
    if bound < FLOAT64_EXACT:
        return np.float64
    if bound < INT64_EXACT:
        return np.int64
    raise SimulatorError(f"an integer accumulation of {k} products of |a| <= {a_max}, |b| <= {b_max} "
                         f"can exceed int64; the simulator cannot run it exactly")


class AccumulatorResult(NamedTuple):
    """An accumulator tensor after the target's width, the values that overflowed it, the largest |acc| seen
    (-1 when a proven bound made the scan unnecessary)."""
    acc: np.ndarray
    overflows: int
    peak: float


def apply_accumulator_width(acc: np.ndarray, bits: int, overflow: str, bound: int | None = None) -> AccumulatorResult:
    """Model a `bits`-wide accumulator that wraps or saturates (`overflow`). Exact: acc holds integers
    (float < 2^24 / 2^53, or int64). With `bound` (a proven |acc| bound) that fits, nothing can overflow."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if bound is not None and bound <= hi:
        return AccumulatorResult(acc, 0, -1.0)
    peak = float(np.max(np.abs(acc))) if acc.size else 0.0
    if peak <= hi:
        return AccumulatorResult(acc, 0, peak)
    over = (acc < lo) | (acc > hi)
    count = int(np.count_nonzero(over))
    if overflow == "saturate":
        return AccumulatorResult(np.clip(acc, lo, hi), count, peak)
    if acc.dtype == np.float32:
        acc = acc.astype(np.float64)
    wrapped = np.mod(acc - lo, float(1 << bits) if acc.dtype == np.float64 else (1 << bits)) + lo
    return AccumulatorResult(wrapped.astype(acc.dtype), count, peak)
