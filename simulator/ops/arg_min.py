"""ArgMin (keepdims, select_last_index), int64."""
import numpy as np

from simulator.ops._common import axis_of


def run(ctx):
    x = ctx.value(0)
    axis = axis_of(ctx.attr("axis", 0), x.ndim)
    if ctx.attr("select_last_index", 0):
        flipped = np.flip(x, axis)
        idx = x.shape[axis] - 1 - np.argmin(flipped, axis=axis)
    else:
        idx = np.argmin(x, axis=axis)
    if ctx.attr("keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return [idx.astype(np.int64)]
