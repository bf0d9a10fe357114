"""The epilogue: integer accumulators -> real values, in the target's arithmetic.

`rescale_sum([(acc_g, scale_g), ...])` = sum over groups of acc_g * scale_g, where each split-K group
(or the single accumulator) is rescaled by its own (broadcastable) scale and the partial results are
added in the same arithmetic:
- float32: acc converted to float32 (round to nearest even), times the float32 scale, summed in float32;
- float16: the same in float16 (accumulator conversion, scale and sum all half precision);
- fixed_point: scale = M * 2^-n with an integer multiplier M of `multiplier_bits` bits; the product
  acc * M (exact int64) is shifted right to `output_frac_bits` fraction bits with the named rounding
  mode, partial results are added as integers, and the sum is read as value * 2^-frac.
"""
from __future__ import annotations

import numpy as np

from simulator.rounding import RoundingMode, shift_right
from simulator.shapes import broadcast_shape


def fixed_point_multiplier(scale: np.ndarray, multiplier_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """scale (> 0) -> (M, n) int64 with scale ~= M * 2^-n and 2^(bits-1) <= M < 2^bits (M = 0 for scale 0)."""
    s = np.asarray(scale, dtype=np.float64)
    mant, exp = np.frexp(s)                                  # s = mant * 2^exp, mant in [0.5, 1)
    m = np.rint(np.ldexp(mant, multiplier_bits)).astype(np.int64)   # in [2^(b-1), 2^b]
    carry = m == (1 << multiplier_bits)                      # rounding reached 2^b: renormalise
    m = np.where(carry, m >> 1, m)
    exp = np.where(carry, exp + 1, exp)
    n = multiplier_bits - exp.astype(np.int64)
    return np.where(s == 0, 0, m), n


def _in_place(op, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """op(a, b), written into a when the broadcast result has a's shape (saves a pass over big outputs)."""
    if broadcast_shape(a.shape, b.shape) == a.shape:
        return op(a, b, out=a)
    return op(a, b)


class Epilogue:
    def __init__(self, arithmetic: str = "float32", rounding: str = "HALF_EVEN",
                 multiplier_bits: int = 31, output_frac_bits: int = 16):
        self.arithmetic = arithmetic
        self.rounding = RoundingMode.parse(rounding)
        self.multiplier_bits = multiplier_bits
        self.output_frac_bits = output_frac_bits

    @classmethod
    def from_target(cls, target) -> "Epilogue":
        e = target.epilogue
        return cls(e.arithmetic, e.rounding, e.multiplier_bits, e.output_frac_bits)

    def rescale_sum(self, terms) -> np.ndarray:
        """terms: iterable of (acc, scale) -> float32 sum_g acc_g * scale_g."""
        if self.arithmetic == "fixed_point":
            total = None
            for acc, scale in terms:
                part = self._fixed(acc, scale)
                total = part if total is None else total + part
            return np.ascontiguousarray(np.ldexp(total.astype(np.float64), -self.output_frac_bits).astype(np.float32))
        dtype = np.float16 if self.arithmetic == "float16" else np.float32
        total = part = None
        for acc, scale in terms:
            scale = np.asarray(scale).astype(dtype, copy=False)
            if acc.dtype != dtype:
                acc = acc.astype(dtype)  # the accumulator rounded to the epilogue type
            shape = broadcast_shape(acc.shape, scale.shape)
            if total is None:  # C order whatever the accumulator's layout: float ops downstream reduce in memory order
                total = np.multiply(acc, scale, order="C")
            else:
                if part is None or part.shape != shape:
                    part = np.empty(shape, dtype)
                np.multiply(acc, scale, out=part)  # rescaled in a scratch buffer, then added
                total = _in_place(np.add, total, part)
        return total.astype(np.float32, copy=False)

    def _fixed(self, acc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        m, n = fixed_point_multiplier(scale, self.multiplier_bits)
        prod = np.asarray(acc).astype(np.int64) * m               # |acc| < 2^acc_bits, M < 2^mult: fits (checked by the schema)
        shift = n - self.output_frac_bits                         # result in units of 2^-frac
        right = np.maximum(shift, 0)
        left = np.maximum(-shift, 0)
        return np.where(shift >= 0, shift_right(prod, right, self.rounding), prod << left)
