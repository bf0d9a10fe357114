"""Split (split sizes as input from opset 13 or attribute; else equal parts / num_outputs)."""
import numpy as np

from simulator.ops._common import axis_of


def run(ctx):
    x = ctx.value(0)
    axis = axis_of(ctx.attr("axis", 0), x.ndim)
    sizes = ctx.value(1) if ctx.has(1) else ctx.attr("split")
    n = len(ctx.node.outputs)
    if sizes is None:
        dim = x.shape[axis]
        part = -(-dim // n)
        sizes = [min(part, dim - i * part) for i in range(n)]
    bounds = np.cumsum([int(s) for s in sizes])[:-1]
    return list(np.split(x, bounds, axis=axis))
