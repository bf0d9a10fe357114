"""Not."""
import numpy as np


def run(ctx):
    return [np.logical_not(ctx.value(0))]
