"""MatMul: integer (or shift-and-add for log-coded attention probabilities) when both operands are
dequantized codes, else float32."""
import numpy as np

from simulator.errors import Unsupported
from simulator.qmatmul import quantized_matmul
from simulator.qtensor import LOG


def run(ctx):
    aq, bq = ctx.quant(0), ctx.quant(1)
    if ctx.integer and aq is not None and bq is not None:
        try:
            max_shift = ctx.target.log_quantizer.max_shift
            y, groups = quantized_matmul(aq, bq, ctx.accumulate, ctx.epilogue, max_shift, ctx.empty)
            ctx.mark("shift-add" if aq.kind == LOG else "integer", groups)
            return [y]
        except Unsupported as why:
            ctx.mark(f"float ({why})")
    a, b = ctx.value(0), ctx.value(1)
    return [np.matmul(a, b).astype(a.dtype, copy=False)]
