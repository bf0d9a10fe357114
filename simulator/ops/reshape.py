"""Reshape (0 copies the input dim unless allowzero; -1 is inferred); carries integer codes along."""
import numpy as np

from simulator.errors import SimulatorError
from simulator.shapes import numel


def target_shape(in_shape, shape, allowzero: bool):
    shape = [int(d) for d in shape]
    if not allowzero:
        shape = [in_shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if shape.count(-1) > 1:
        raise SimulatorError("Reshape: more than one -1 in the target shape")
    if -1 in shape:
        known = numel(d for d in shape if d != -1)
        total = numel(in_shape)
        shape[shape.index(-1)] = total // known if known else 0
    if numel(shape) != numel(in_shape):
        raise SimulatorError(f"Reshape: cannot reshape {list(in_shape)} to {shape}")
    return tuple(shape)


def run(ctx):
    q = ctx.quant(0)
    in_shape = q.shape if q is not None else np.shape(ctx.value(0))
    shape = target_shape(in_shape, ctx.value(1), bool(ctx.attr("allowzero", 0)))
    if q is not None:
        out = q.reshape(shape)
        ctx.set_quant(0, out)
        return [ctx.lazy(out.dequantize)]
    return [np.reshape(ctx.value(0), shape)]
