"""Conv: integer accumulation when input and weight are DequantizeLinear outputs, else float32."""
import numpy as np

from simulator.errors import Unsupported
from simulator.integer import conv2d
from simulator.ops._conv_attrs import conv_params, lift
from simulator.qconv import quantized_conv


def run(ctx):
    xq, wq = ctx.quant(0), ctx.quant(1)
    x_shape = xq.shape if xq is not None else np.shape(ctx.value(0))
    w_shape = wq.shape if wq is not None else np.shape(ctx.value(1))
    strides, pads, dilations, group = conv_params(ctx, x_shape, w_shape)
    bias = ctx.value(2)
    y = None
    if ctx.integer and xq is not None and wq is not None and len(x_shape) == 4:
        try:
            y, groups = quantized_conv(xq, wq, strides, pads, dilations, group, ctx.accumulate, ctx.epilogue)
            ctx.mark("integer", groups)
        except Unsupported as why:
            ctx.mark(f"float ({why})")
    if y is None:
        x, w = ctx.value(0), ctx.value(1)
        y = conv2d(lift(x), lift(w), strides, pads, dilations, group, np.float32)
        if x.ndim == 3:
            y = y.reshape(y.shape[0], y.shape[1], y.shape[3])
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * (y.ndim - 2)).astype(np.float32)
    return [y.astype(np.float32, copy=False)]
