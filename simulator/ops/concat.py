"""Concat; if any input carries integer codes the output does too (float parts are masked elements)."""
import numpy as np

from simulator.ops._common import axis_of
from simulator.qtensor import QTensor, concat


def run(ctx):
    names = [i for i in range(ctx.n_inputs) if ctx.has(i)]
    quants = [ctx.quant(i) for i in names]
    ndim = next((q.ndim for q in quants if q is not None), None)
    if ndim is None:
        vals = [ctx.value(i) for i in names]
        return [np.concatenate(vals, axis=axis_of(ctx.attr("axis"), vals[0].ndim))]
    axis = axis_of(ctx.attr("axis"), ndim)
    parts = [q if q is not None else ctx.value(i) for i, q in zip(names, quants)]
    kinds = {p.kind for p in parts if isinstance(p, QTensor)}
    if len(kinds) > 1:
        vals = [ctx.value(i) for i in names]
        return [np.concatenate(vals, axis=axis)]
    out = concat(parts, axis).simplify_mask()
    ctx.set_quant(0, out)
    return [ctx.lazy(out.dequantize)]
