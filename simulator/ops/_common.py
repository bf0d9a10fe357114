"""Small helpers shared by the op files: elementwise op factories and ONNX dtype mapping."""
from __future__ import annotations

import numpy as np
from onnx import helper

from simulator.errors import SimulatorError


def np_dtype(onnx_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):
        raise SimulatorError(f"ONNX element type {onnx_type} is not supported") from None


def unary(fn):
    """An elementwise op computed in the input's dtype."""
    def run(ctx):
        x = ctx.value(0)
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]
    return run


def binary(fn):
    """A broadcasting elementwise op; the result keeps the first input's dtype (ONNX: both inputs share it)."""
    def run(ctx):
        a, b = ctx.value(0), ctx.value(1)
        return [np.asarray(fn(a, b)).astype(a.dtype, copy=False)]
    return run


def compare(fn):
    def run(ctx):
        return [np.asarray(fn(ctx.value(0), ctx.value(1)), dtype=bool)]
    return run


def axis_of(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise SimulatorError(f"axis {axis} is out of range for a rank-{ndim} tensor")
    return axis % max(ndim, 1)
