"""Unsqueeze (axes as input from opset 13, attribute before); carries integer codes along."""
import numpy as np


def run(ctx):
    q = ctx.quant(0)
    ndim = q.ndim if q is not None else np.ndim(ctx.value(0))
    axes = ctx.value(1) if ctx.has(1) else ctx.attr("axes")
    out_rank = ndim + len(axes)
    axes = sorted(int(a) % out_rank for a in np.ravel(axes))
    shape = list(q.shape if q is not None else np.shape(ctx.value(0)))
    for a in axes:
        shape.insert(a, 1)
    if q is not None:
        out = q.reshape(shape)
        ctx.set_quant(0, out)
        return [ctx.lazy(out.dequantize)]
    return [np.reshape(ctx.value(0), shape)]
