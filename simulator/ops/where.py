"""Where."""
import numpy as np


def run(ctx):
    c, a, b = ctx.value(0), ctx.value(1), ctx.value(2)
    return [np.where(c, a, b).astype(a.dtype, copy=False)]
