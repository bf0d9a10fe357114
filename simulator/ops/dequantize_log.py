"""dgq.DequantizeLog(Q, S) -> S * 2^-Q (float32); the output carries the log codes so that the
A.V MatMul downstream runs as shift-and-add."""
import numpy as np

from simulator.qtensor import LOG, QTensor


def run(ctx):
    q, s = ctx.value(0), ctx.value(1)
    scale = np.asarray(s, dtype=np.float32).reshape((1,) * q.ndim)
    qt = QTensor(codes=q, scale=scale, zero_point=np.zeros((1,) * q.ndim, np.int32), kind=LOG,
                 code_range=(0, int(np.iinfo(q.dtype).max)))
    ctx.set_quant(0, qt)
    return [ctx.lazy(qt.dequantize)]
