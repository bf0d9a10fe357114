"""Flatten to 2-D at `axis`."""
import numpy as np


def run(ctx):
    x = ctx.value(0)
    axis = ctx.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))]
