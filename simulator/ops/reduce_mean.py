"""ReduceMean (axes as input from opset 18, attribute before)."""
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
    return [np.mean(x, axis=axes, keepdims=keep).astype(x.dtype, copy=False)]
