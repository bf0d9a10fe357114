"""Shared pieces of the ONNX integer ops (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv)."""
from __future__ import annotations

import numpy as np

from simulator.ops._qparams import code_range


def centred(codes: np.ndarray, zp, axis_shape) -> tuple[np.ndarray, int]:
    """(codes - zero point) as int32 and a bound on its magnitude from the storage grid."""
    lo, hi = code_range(codes.dtype)
    ints = codes.astype(np.int32)
    if zp is not None:
        ints = ints - np.asarray(zp).astype(np.int32).reshape(axis_shape if np.size(zp) > 1 else ())
    return ints, hi - lo


def requantize(acc: np.ndarray, multiplier: np.ndarray, y_zp, like: np.ndarray) -> np.ndarray:
    """QLinear* output: saturate(round_half_even(acc * multiplier) + y_zp), multiplier = s_a s_b / s_y."""
    y = np.rint(acc.astype(np.float64) * multiplier.astype(np.float64))
    dtype = like.dtype if y_zp is None else np.asarray(y_zp).dtype
    if y_zp is not None:
        y = y + np.asarray(y_zp).astype(np.float64)
    lo, hi = code_range(dtype)
    return np.clip(y, lo, hi).astype(dtype)
