"""Gemm: alpha * op(A) @ op(B) + beta * C; integer accumulation when A and B are dequantized codes."""
import numpy as np

from simulator.errors import Unsupported
from simulator.qmatmul import quantized_matmul


def run(ctx):
    alpha, beta = np.float32(ctx.attr("alpha", 1.0)), np.float32(ctx.attr("beta", 1.0))
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    aq, bq = ctx.quant(0), ctx.quant(1)
    y = None
    if ctx.integer and aq is not None and bq is not None:
        try:
            y, groups = quantized_matmul(aq.transpose((1, 0)) if trans_a else aq,
                                         bq.transpose((1, 0)) if trans_b else bq,
                                         ctx.accumulate, ctx.epilogue)
            ctx.mark("integer", groups)
        except Unsupported as why:
            ctx.mark(f"float ({why})")
    if y is None:
        a, b = ctx.value(0), ctx.value(1)
        y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
    dtype = y.dtype
    if alpha != 1:
        y = alpha * y
    c = ctx.value(2)
    if c is not None:
        y = y + (beta * c if beta != 1 else c)
    return [np.asarray(y).astype(dtype, copy=False)]
