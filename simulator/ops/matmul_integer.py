"""MatMulInteger: exact (A - a_zp) @ (B - b_zp) in an int32 accumulator (per-row a_zp, per-column b_zp)."""
import numpy as np

from simulator.integer import int_matmul
from simulator.ops._integer_ops import centred


def run(ctx):
    a, b = ctx.value(0), ctx.value(1)
    ai, a_max = centred(a, ctx.value(2), (-1, 1))
    bi, b_max = centred(b, ctx.value(3), (1, -1))
    acc = ctx.accumulate(int_matmul(ai, bi, a_max, b_max))
    ctx.mark("integer")
    return [acc.astype(np.int32)]
