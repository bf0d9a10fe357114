"""ConvInteger: exact convolution of (x - x_zp) and (w - w_zp) in an int32 accumulator."""
import numpy as np

from simulator.integer import int_conv2d
from simulator.ops._conv_attrs import conv_params, lift
from simulator.ops._integer_ops import centred


def run(ctx):
    x, w = ctx.value(0), ctx.value(1)
    strides, pads, dilations, group = conv_params(ctx, x.shape, w.shape)
    xi, x_max = centred(x, ctx.value(2), ())
    wi, w_max = centred(w, ctx.value(3), (-1,) + (1,) * (w.ndim - 1))
    acc = ctx.accumulate(int_conv2d(lift(xi), lift(wi), x_max, w_max, strides, pads, dilations, group))
    ctx.mark("integer")
    if x.ndim == 3:
        acc = acc.reshape(acc.shape[0], acc.shape[1], acc.shape[3])
    return [acc.astype(np.int32)]
