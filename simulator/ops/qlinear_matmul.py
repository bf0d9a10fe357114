"""QLinearMatMul: exact integer product, then requantization to y's grid."""
import numpy as np

from simulator.integer import int_matmul
from simulator.ops._integer_ops import centred, requantize


def run(ctx):
    a, sa, za, b, sb, zb, sy, zy = (ctx.value(i) for i in range(8))
    ai, a_max = centred(a, za, (-1, 1))
    bi, b_max = centred(b, zb, (1, -1))
    acc = ctx.accumulate(int_matmul(ai, bi, a_max, b_max))
    ctx.mark("integer")
    sa = np.asarray(sa).reshape(-1, 1) if np.size(sa) > 1 else np.asarray(sa)
    sb = np.asarray(sb).reshape(1, -1) if np.size(sb) > 1 else np.asarray(sb)
    return [requantize(acc, (sa * sb / sy).astype(np.asarray(sy).dtype), zy, a)]
