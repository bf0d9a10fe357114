"""QLinearConv: exact integer convolution (+ int32 bias in the accumulator), then requantization."""
import numpy as np

from simulator.integer import int_conv2d
from simulator.ops._conv_attrs import conv_params, lift
from simulator.ops._integer_ops import centred, requantize


def run(ctx):
    x, sx, zx, w, sw, zw, sy, zy = (ctx.value(i) for i in range(8))
    bias = ctx.value(8)
    strides, pads, dilations, group = conv_params(ctx, x.shape, w.shape)
    xi, x_max = centred(x, zx, ())
    wi, w_max = centred(w, zw, (-1,) + (1,) * (w.ndim - 1))
    acc = int_conv2d(lift(xi), lift(wi), x_max, w_max, strides, pads, dilations, group)
    if bias is not None:
        acc = acc + bias.astype(acc.dtype).reshape(1, -1, 1, 1)
    acc = ctx.accumulate(acc)
    ctx.mark("integer")
    if x.ndim == 3:
        acc = acc.reshape(acc.shape[0], acc.shape[1], acc.shape[3])
    sw = np.asarray(sw).reshape((1, -1) + (1,) * (acc.ndim - 2)) if np.size(sw) > 1 else np.asarray(sw)
    return [requantize(acc, (np.asarray(sx) * sw / sy).astype(np.asarray(sy).dtype), zy, x)]
