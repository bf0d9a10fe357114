"""Cast (float -> float of the same type carries integer codes along)."""
import numpy as np

from simulator.ops._common import np_dtype


def run(ctx):
    dtype = np_dtype(ctx.attr("to"))
    q = ctx.quant(0)
    if q is not None and dtype == np.float32:
        ctx.set_quant(0, q)
        return [ctx.lazy(q.dequantize)]
    x = ctx.value(0)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)
    if dtype == np.bool_:
        return [x != 0]
    return [x.astype(dtype, copy=False)]  # same type: the value itself (no 1 GB copies of attention maps)
