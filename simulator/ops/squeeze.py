"""Squeeze (axes as input from opset 13, attribute before; none = all size-1 axes)."""
import numpy as np


def run(ctx):
    x = ctx.value(0)
    axes = ctx.value(1) if ctx.has(1) else ctx.attr("axes")
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(int(a) % x.ndim for a in np.ravel(axes)))]
