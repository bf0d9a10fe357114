"""Gelu (approximate="none": x * Phi(x) with erf; "tanh": the tanh approximation), float32."""
import numpy as np
from scipy.special import erf


def run(ctx):
    x = ctx.value(0)
    if ctx.attr("approximate", "none") == "tanh":
        inner = np.sqrt(2 / np.pi).astype(x.dtype) * (x + x.dtype.type(0.044715) * x ** 3)
        return [(0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)]
    return [(0.5 * x * (1 + erf(x / np.sqrt(x.dtype.type(2))))).astype(x.dtype)]
