"""ReduceMax (axes as input from opset 18, attribute before; empty axes = all unless noop_with_empty_axes)."""
import numpy as np

from simulator.ops._common import reduction_axes


def run(ctx):
    x = ctx.value(0)
    axes, noop = reduction_axes(ctx, x)
    if noop:
        return [x]
    keep = bool(ctx.attr("keepdims", 1))
    if x.size == 0:  # numpy refuses max of nothing; ONNX gives the identity of max, the lowest value
        fill = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        reduced = [axes is None or i in axes for i in range(x.ndim)]
        out = np.full([1 if r else d for r, d in zip(reduced, x.shape)], fill, dtype=x.dtype)
        return [out if keep else out.reshape([d for r, d in zip(reduced, x.shape) if not r])]
    return [np.max(x, axis=axes, keepdims=keep).astype(x.dtype, copy=False)]
