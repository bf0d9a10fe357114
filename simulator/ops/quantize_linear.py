"""QuantizeLinear: q = saturate(round_half_even(x / s) + z) in the zero point's integer type.

x / s is a float32 division, as in onnxruntime; the codes are what an accelerator's quantizer
produces from the same float input.
"""
import numpy as np
from onnx import TensorProto

from passes.contract import NARROW_BITS
from simulator.errors import SimulatorError
from simulator.ops._common import np_dtype
from simulator.ops._qparams import broadcast_param, code_range



def run(ctx):
    x, scale = ctx.value(0), ctx.value(1)
    zp = ctx.value(2)
    axis, block = ctx.attr("axis", 1), ctx.attr("block_size", 0)
    out_type = ctx.attr("output_dtype", 0)
    bits = NARROW_BITS.get(out_type)
    if zp is not None:
        dtype = zp.dtype
        bits = bits or ctx.sim.narrow_bits.get(ctx.node.inputs[2])
    elif out_type:
        dtype = np_dtype(out_type)
        if bits:
            dtype = np.dtype(np.int8 if out_type in (TensorProto.INT4, TensorProto.INT2) else np.uint8)
    else:
        dtype = np.dtype(np.uint8)
    if not np.issubdtype(dtype, np.integer):
        raise SimulatorError(f"node {ctx.node.name!r}: QuantizeLinear to {dtype} is not supported (integer grids only)")
    s = broadcast_param(scale, x.shape, axis, block)
    compute = np.float32 if x.dtype != np.float64 else np.float64
    q = np.rint(x.astype(compute, copy=False) / s.astype(compute))
    if zp is not None:
        q = q + broadcast_param(zp, x.shape, axis, block).astype(compute)
    lo, hi = code_range(dtype, bits)
    return [np.clip(q, lo, hi).astype(dtype)]
