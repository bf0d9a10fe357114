"""Clip (min/max inputs from opset 11, attributes before); integer codes stay integer."""
import numpy as np


def run(ctx):
    x = ctx.value(0)
    if ctx.opset < 11:
        lo, hi = ctx.attr("min"), ctx.attr("max")
    else:
        lo, hi = ctx.value(1), ctx.value(2)
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, dtype=x.dtype))
    return [out.astype(x.dtype, copy=False)]
