"""DequantizeLinear: x = (q - z) * s. The output also carries the codes (QTensor) so that integer
ops downstream can use them; the float value is computed only if a float op needs it."""
import numpy as np

from simulator.ops._qparams import broadcast_param, code_range
from simulator.qtensor import QTensor


def run(ctx):
    q, scale = ctx.value(0), ctx.value(1)
    zp = ctx.value(2)
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    s = broadcast_param(scale, q.shape, axis, block)
    z = np.zeros((1,) * q.ndim, np.int32) if zp is None else broadcast_param(zp, q.shape, axis, block).astype(np.int32)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"DequantizeLinear of {q.dtype} codes is not supported (integer grids only)")
    bits = ctx.sim.narrow_bits.get(ctx.node.inputs[0])
    qt = QTensor(codes=q, scale=s.astype(np.float32), zero_point=z, code_range=code_range(q.dtype, bits))
    if s.dtype != np.float32:  # float16 scales: plain float path in that type
        return [((q.astype(np.int32) - z).astype(s.dtype) * s).astype(s.dtype)]
    ctx.set_quant(0, qt)
    return [ctx.lazy(qt.dequantize)]
