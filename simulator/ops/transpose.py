"""Transpose (default: reverse the axes); carries integer codes along."""
import numpy as np


def run(ctx):
    q = ctx.quant(0)
    ndim = q.ndim if q is not None else np.ndim(ctx.value(0))
    perm = ctx.attr("perm", list(range(ndim))[::-1])
    if q is not None:
        out = q.transpose(perm)
        ctx.set_quant(0, out)
        return [ctx.lazy(out.dequantize)]
    return [np.transpose(ctx.value(0), perm)]
