"""ReduceMax (axes as input from opset 18, attribute before; empty axes = all unless noop_with_empty_axes)."""
import numpy as np


def run(ctx):
    x = ctx.value(0)
    axes = ctx.value(1) if ctx.has(1) else ctx.attr("axes")
    keep = bool(ctx.attr("keepdims", 1))
    if axes is None or len(np.ravel(axes)) == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return [x]
        axes = None
    else:
        axes = tuple(int(a) % x.ndim for a in np.ravel(axes))
    if x.size == 0:
        fill = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        shape = [1 if (axes is None or i in axes) else d for i, d in enumerate(x.shape)]
        out = np.full(shape, fill, dtype=x.dtype)
        return [out if keep else out.reshape([d for i, d in enumerate(x.shape) if not (axes is None or i in axes)])]
    return [np.max(x, axis=axes, keepdims=keep).astype(x.dtype, copy=False)]
