"""LayerNormalization over the axes from `axis` on; optional Mean and InvStdDev outputs."""
import numpy as np


def run(ctx):
    x, scale = ctx.value(0), ctx.value(1)
    bias = ctx.value(2)
    axis = ctx.attr("axis", -1) % x.ndim
    eps = np.float32(ctx.attr("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float32)
    mean = np.mean(xf, axis=axes, keepdims=True)
    centred = xf - mean
    inv_std = 1 / np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True) + eps)
    y = centred * inv_std * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype, copy=False), mean, inv_std]
