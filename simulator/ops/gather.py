"""Gather (negative indices wrap)."""
import numpy as np

from simulator.ops._common import axis_of


def run(ctx):
    data, idx = ctx.value(0), ctx.value(1)
    axis = axis_of(ctx.attr("axis", 0), data.ndim)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    return [np.take(data, idx, axis=axis)]
