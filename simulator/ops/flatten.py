"""Flatten to 2-D at `axis`."""
from simulator.shapes import numel


def run(ctx):
    x = ctx.value(0)
    axis = ctx.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(numel(x.shape[:axis]), numel(x.shape[axis:]))]
