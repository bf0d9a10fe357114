"""Exact integer matrix products on torch's BLAS, in a type the exactness bound allows."""
from __future__ import annotations

import numpy as np
import torch

from simulator.errors import SimulatorError
from simulator.integer.bounds import accumulate_dtype
from simulator.integer.threads import threads_for
from simulator.shapes import broadcast_shape, numel


def int_matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int) -> np.ndarray:
    """Exact a @ b for integer arrays (numpy matmul broadcasting). Returns float32/float64 holding
    exact integers when the bound proves it (< 2^24 / < 2^53), else int64."""
    dtype = accumulate_dtype(a.shape[-1], a_max, b_max)
    return np.matmul(a.astype(dtype, copy=False), b.astype(dtype, copy=False))


def require_exact_float32_products() -> None:
    if torch.get_float32_matmul_precision() != "highest":  # reduced-precision (bf16/tf32) products are not exact
        raise SimulatorError("torch float32 matmul precision must be 'highest' for exact integer products")


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy broadcasting) for integer-valued arrays already in a type accumulate_dtype chose,
    on torch's BLAS: every partial sum is then an integer below the type's exact bound, so any
    summation order gives the exact result (int64: integer arithmetic)."""
    require_exact_float32_products()
    work = numel(broadcast_shape(a.shape[:-1], b.shape[:-2] + (1,))) * a.shape[-1] * b.shape[-1]
    with threads_for(work):
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
