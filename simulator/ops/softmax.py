"""Softmax in float32 (opset >= 13: along `axis`; before: over the flattened dims from `axis`)."""
import numpy as np


def softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def run(ctx):
    x = ctx.value(0)
    if ctx.opset >= 13:
        return [softmax(x, ctx.attr("axis", -1)).astype(x.dtype, copy=False)]
    axis = ctx.attr("axis", 1) % x.ndim
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
    return [softmax(flat, 1).reshape(x.shape).astype(x.dtype, copy=False)]
