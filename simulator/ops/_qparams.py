"""Shared handling of QuantizeLinear/DequantizeLinear parameters: per-tensor, per-axis, blocked."""
from __future__ import annotations

import numpy as np

from simulator.errors import SimulatorError


def broadcast_param(p: np.ndarray, x_shape, axis: int, block_size: int = 0) -> np.ndarray:
    """A scale/zero-point input as an array broadcastable to x (same ndim)."""
    p = np.asarray(p)
    ndim = len(x_shape)
    if p.ndim == 0 or p.size == 1 and p.ndim <= 1 and not block_size:
        return p.reshape((1,) * ndim)
    axis = axis % ndim
    if block_size:
        return _blocked(p, x_shape, axis, block_size)
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise SimulatorError(f"per-axis parameter of shape {list(p.shape)} does not match axis {axis} "
                             f"of an input of shape {list(x_shape)}")
    shape = [1] * ndim
    shape[axis] = p.shape[0]
    return p.reshape(shape)


def _blocked(p: np.ndarray, x_shape, axis: int, block_size: int) -> np.ndarray:
    """Blocked parameters (ONNX opset 21): p has x's rank, x's extent on every axis but `axis`, and
    ceil(x_shape[axis] / block_size) there; element i along `axis` reads block i // block_size. Axes along which p
    is constant are collapsed to 1 first (same values by broadcasting), so a per-index vector broadcast to the
    blocked form (passes/block_axis_quantizers.py) comes back in its per-axis shape, [1, ..., 1, L], which is what
    the integer kernels read scale structure from, and no x-sized array is built."""
    ndim = len(x_shape)
    expected = [(d + block_size - 1) // block_size if i == axis else d for i, d in enumerate(x_shape)]
    if p.ndim != ndim or any(e != d for e, d in zip(expected, p.shape)):
        raise SimulatorError(f"blocked parameter of shape {list(p.shape)} does not match an input of shape "
                             f"{list(x_shape)} (axis {axis}, block size {block_size}): expected {expected}")
    for i in range(ndim):
        if p.shape[i] > 1 and np.all(p == p.take([0], axis=i)):
            p = p.take([0], axis=i)
    if p.shape[axis] == 1:
        return p
    return np.repeat(p, block_size, axis=axis)[tuple(slice(0, d) if i == axis else slice(None)
                                                     for i, d in enumerate(x_shape))]


def code_range(dtype, onnx_bits: int | None = None) -> tuple[int, int]:
    """Storage grid of an integer dtype; 4-bit types (widened to int8/uint8 here) via onnx_bits."""
    dtype = np.dtype(dtype)
    if onnx_bits:
        signed = np.issubdtype(dtype, np.signedinteger)
        return (-(1 << (onnx_bits - 1)), (1 << (onnx_bits - 1)) - 1) if signed else (0, (1 << onnx_bits) - 1)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)
