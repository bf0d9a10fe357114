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
        if p.ndim != ndim:
            raise SimulatorError("blocked quantization needs a scale of the input's rank")
        return np.repeat(p, block_size, axis=axis)[tuple(slice(0, d) for d in x_shape)]
    if p.ndim != 1 or p.shape[0] != x_shape[axis]:
        raise SimulatorError(f"per-axis parameter of shape {list(p.shape)} does not match axis {axis} "
                             f"of an input of shape {list(x_shape)}")
    shape = [1] * ndim
    shape[axis] = p.shape[0]
    return p.reshape(shape)


def code_range(dtype, onnx_bits: int | None = None) -> tuple[int, int]:
    """Storage grid of an integer dtype; 4-bit types (widened to int8/uint8 here) via onnx_bits."""
    dtype = np.dtype(dtype)
    if onnx_bits:
        signed = np.issubdtype(dtype, np.signedinteger)
        return (-(1 << (onnx_bits - 1)), (1 << (onnx_bits - 1)) - 1) if signed else (0, (1 << onnx_bits) - 1)
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)
