"""Softmax in float32 (opset >= 13: along `axis`; before: over the flattened dims from `axis`)."""
import numpy as np

from simulator.shapes import numel


ROWS_BYTES = 1 << 20  # softmax over the last axis runs a block of rows at a time (temporaries in cache)


def softmax(x, axis, out=None):
    """`out` (optional, may be x itself): where the blocked computation writes its result."""
    if axis % x.ndim == x.ndim - 1 and x.ndim > 1 and x.nbytes > 4 * ROWS_BYTES:
        rows = x.reshape(-1, x.shape[-1])
        out = np.empty(rows.shape, x.dtype) if out is None else out.reshape(rows.shape)
        step = max(1, ROWS_BYTES // max(1, rows.shape[1] * rows.itemsize))
        for start in range(0, rows.shape[0], step):  # rows are independent: the same values as all at once
            out[start:start + step] = _softmax(rows[start:start + step], -1)
        return out.reshape(x.shape)
    return _softmax(x, axis)


def _softmax(x, axis):
    if x.dtype == np.float32:  # torch's kernel: max-subtracted, one pass, vectorised over its threads
        import torch

        return torch.softmax(torch.from_numpy(np.ascontiguousarray(x)), dim=axis).numpy()
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def run(ctx):
    x = ctx.value(0)
    if ctx.opset >= 13:
        out = None
        if x.dtype == np.float32 and x.nbytes > 4 * ROWS_BYTES:  # attention maps: in place or a recycled buffer
            out = ctx.reusable(0, x.shape, x.dtype)
            out = ctx.empty(x.shape, x.dtype) if out is None else out
        return [softmax(x, ctx.attr("axis", -1), out).astype(x.dtype, copy=False)]
    axis = ctx.attr("axis", 1) % x.ndim
    flat = x.reshape(numel(x.shape[:axis]), -1)
    return [softmax(flat, 1).reshape(x.shape).astype(x.dtype, copy=False)]
