"""ConstantOfShape (default value: float32 0)."""
import numpy as np


def run(ctx):
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    shape = tuple(int(d) for d in ctx.value(0))
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]
