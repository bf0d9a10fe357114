"""dgq.DequantizeLog(Q, S) -> S * 2^-Q (float32); the output carries the log codes so that the
A.V MatMul downstream runs as shift-and-add (a scale per sample is a scale varying along the batch axis)."""
import numpy as np

from simulator.qtensor import LOG, QTensor


def run(ctx):
    return [dequantized(ctx, ctx.value(0), ctx.value(1))]


def dequantized(ctx, q: np.ndarray, s) -> object:
    """The float output S * 2^-q (lazy), recorded with its codes as output 0's QTensor."""
    s = np.asarray(s, dtype=np.float32)  # a scalar, or per leading index ([B*heads, 1, 1]: per sample)
    scale = s.reshape((1,) * (q.ndim - s.ndim) + s.shape) if s.ndim <= q.ndim else s.reshape((1,) * q.ndim)
    qt = QTensor(codes=q, scale=scale, zero_point=np.zeros((1,) * q.ndim, np.int32), kind=LOG,
                 code_range=(0, int(np.iinfo(q.dtype).max)))
    ctx.set_quant(0, qt)
    return ctx.lazy(qt.dequantize)
