"""ReduceMean (axes as input from opset 18, attribute before)."""
import numpy as np

from simulator.ops._common import reduction_axes


def run(ctx):
    x = ctx.value(0)
    axes, noop = reduction_axes(ctx, x)
    if noop:
        return [x]
    return [np.mean(x, axis=axes, keepdims=bool(ctx.attr("keepdims", 1))).astype(x.dtype, copy=False)]
