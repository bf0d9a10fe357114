"""Div: true division for floats; integer division truncates toward zero (as onnxruntime does)."""
import numpy as np


def run(ctx):
    a, b = ctx.value(0), ctx.value(1)
    if np.issubdtype(a.dtype, np.integer):
        q = np.abs(a) // np.abs(b)
        return [(np.sign(a) * np.sign(b) * q).astype(a.dtype)]
    return [np.divide(a, b).astype(a.dtype, copy=False)]
