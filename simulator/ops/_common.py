"""Small helpers shared by the op files: elementwise op factories and ONNX dtype mapping."""
from __future__ import annotations

import numpy as np
from onnx import helper

from simulator.errors import SimulatorError
from simulator.shapes import broadcast_shape, numel


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
    """A broadcasting elementwise op; the result keeps the first input's dtype (ONNX: both inputs share it).
    Inputs that are broadcast views (ConstantOfShape, Expand of a constant) are computed on their
    compact form: the same elementwise values, without materialising the full shape. A large float
    result of a numpy ufunc is written into a dying input or a recycled buffer (attention maps)."""
    def run(ctx):
        a, b = ctx.value(0), ctx.value(1)
        ca, cb = compact(a), compact(b)
        shape = broadcast_shape(np.shape(a), np.shape(b))
        if broadcast_shape(np.shape(ca), np.shape(cb)) != shape:  # both broadcast along some axis
            y = np.asarray(fn(ca, cb)).astype(np.asarray(a).dtype, copy=False)
            return [np.broadcast_to(y, shape)]
        out = _output_buffer(ctx, a, b) if isinstance(fn, np.ufunc) else None
        if out is not None:
            return [fn(a, b, out=out)]
        return [np.asarray(fn(a, b)).astype(a.dtype, copy=False)]
    return run


LARGE_BYTES = 1 << 25  # results from this size on go to dying inputs / recycled buffers


def _output_buffer(ctx, a, b) -> np.ndarray | None:
    if not (isinstance(a, np.ndarray) and a.dtype.kind == "f" and np.result_type(a, b) == a.dtype):
        return None
    shape = broadcast_shape(a.shape, np.shape(b))
    if numel(shape) * a.itemsize < LARGE_BYTES:
        return None
    out = ctx.reusable(0, shape, a.dtype)
    if out is None:
        out = ctx.reusable(1, shape, a.dtype)
    return out if out is not None else ctx.empty(shape, a.dtype)


def compact(x):
    """The smallest array a broadcast view x repeats (its stride-0 axes cut to size 1); x itself otherwise."""
    if not isinstance(x, np.ndarray) or not any(st == 0 and d > 1 for st, d in zip(x.strides, x.shape)):
        return x
    return x[tuple(slice(0, 1) if st == 0 and d > 1 else slice(None) for st, d in zip(x.strides, x.shape))]


def compare(fn):
    def run(ctx):
        return [np.asarray(fn(ctx.value(0), ctx.value(1)), dtype=bool)]
    return run


def axis_of(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise SimulatorError(f"axis {axis} is out of range for a rank-{ndim} tensor")
    return axis % max(ndim, 1)


def reduction_axes(ctx, x) -> tuple[tuple[int, ...] | None, bool]:
    """(axes, noop) of a Reduce* node: axes from the input (opset 18+) or the attribute (before),
    normalised to non-negative; None = all axes. noop: empty axes with noop_with_empty_axes=1 (identity)."""
    axes = ctx.value(1) if ctx.has(1) else ctx.attr("axes")
    if axes is None or len(np.ravel(axes)) == 0:
        return None, bool(ctx.attr("noop_with_empty_axes", 0))
    return tuple(int(a) % x.ndim for a in np.ravel(axes)), False
