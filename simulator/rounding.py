"""Named rounding modes, for floats (to integers) and for integer right shifts (fixed-point rescale).

Every place the simulator rounds names its mode; hardware datasheets name theirs the same way.
"""
from __future__ import annotations

from enum import Enum

import numpy as np


class RoundingMode(str, Enum):
    HALF_EVEN = "HALF_EVEN"    # ties to even (IEEE default, ONNX QuantizeLinear)
    HALF_UP = "HALF_UP"        # ties toward +infinity
    HALF_DOWN = "HALF_DOWN"    # ties toward -infinity
    HALF_AWAY = "HALF_AWAY"    # ties away from zero (C round())
    TRUNCATE = "TRUNCATE"      # toward zero
    FLOOR = "FLOOR"            # toward -infinity (plain arithmetic shift)
    CEIL = "CEIL"              # toward +infinity

    @classmethod
    def parse(cls, name: str) -> "RoundingMode":
        try:
            return cls(str(name).upper())
        except ValueError:
            raise ValueError(f"unknown rounding mode {name!r} (expected one of {', '.join(m.value for m in cls)})") from None


def round_float(x: np.ndarray, mode: RoundingMode = RoundingMode.HALF_EVEN) -> np.ndarray:
    """Round a float array to integral values (same float dtype)."""
    mode = RoundingMode(mode)
    if mode is RoundingMode.HALF_EVEN:
        return np.rint(x)
    if mode is RoundingMode.FLOOR:
        return np.floor(x)
    if mode is RoundingMode.CEIL:
        return np.ceil(x)
    if mode is RoundingMode.TRUNCATE:
        return np.trunc(x)
    low = np.floor(x)
    frac = x - low  # exact for floats: low is within one ulp-range of x
    if mode is RoundingMode.HALF_UP:
        return np.where(frac >= 0.5, low + 1, low)
    if mode is RoundingMode.HALF_DOWN:
        return np.where(frac > 0.5, low + 1, low)
    # HALF_AWAY
    return np.where((frac > 0.5) | ((frac == 0.5) & (x > 0)), low + 1, low)


def shift_right(x: np.ndarray, shift: np.ndarray | int, mode: RoundingMode) -> np.ndarray:
    """x / 2**shift rounded with `mode`, in exact int64 arithmetic (shift >= 0, elementwise or scalar)."""
    mode = RoundingMode(mode)
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 0):
        raise ValueError("shift_right needs non-negative shifts")
    q = x >> shift                      # floor division by 2**shift
    r = x - (q << shift)                # remainder in [0, 2**shift)
    if mode is RoundingMode.FLOOR:
        return q
    if mode is RoundingMode.CEIL:
        return q + (r != 0)
    if mode is RoundingMode.TRUNCATE:
        return q + ((r != 0) & (x < 0))
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    nonzero_shift = shift > 0
    above, tie = (r > half) & nonzero_shift, (r == half) & nonzero_shift
    if mode is RoundingMode.HALF_UP:
        return q + (above | tie)
    if mode is RoundingMode.HALF_DOWN:
        return q + above
    if mode is RoundingMode.HALF_AWAY:
        return q + (above | (tie & (x >= 0)))
    return q + (above | (tie & ((q & 1) == 1)))  # HALF_EVEN
