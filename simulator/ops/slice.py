"""Slice (starts/ends/axes/steps inputs, ONNX clamping rules); carries integer codes along."""
import numpy as np


def slices(shape, starts, ends, axes, steps) -> tuple:
    ndim = len(shape)
    index = [slice(None)] * ndim
    axes = list(range(len(starts))) if axes is None else [int(a) % ndim for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[axis]
        start, end = int(start), int(end)
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


def run(ctx):
    q = ctx.quant(0)
    shape = q.shape if q is not None else np.shape(ctx.value(0))
    if ctx.has(1):
        index = slices(shape, ctx.value(1), ctx.value(2),
                       ctx.value(3) if ctx.has(3) else None, ctx.value(4) if ctx.has(4) else None)
    else:  # opset < 10: attributes
        index = slices(shape, ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None)
    if q is not None:
        out = q.slice(index)
        if out is not None:
            ctx.set_quant(0, out)
            return [ctx.lazy(out.dequantize)]
        return [q.values[index]]
    return [ctx.value(0)[index]]
