"""Conv-family attribute handling (auto_pad, pads, strides, dilations) and 1-D -> 2-D lifting."""
from __future__ import annotations

from simulator.errors import SimulatorError


def conv_params(ctx, x_shape, w_shape):
    """-> (strides, pads (top, left, bottom, right), dilations, group) for a 2-D convolution."""
    spatial = len(x_shape) - 2
    if spatial not in (1, 2):
        raise SimulatorError(f"node {ctx.node.name!r}: only 1-D and 2-D convolutions are supported")
    strides = list(ctx.attr("strides", [1] * spatial))
    dilations = list(ctx.attr("dilations", [1] * spatial))
    kernel = list(ctx.attr("kernel_shape", w_shape[2:]))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(spatial):
            out = -(-x_shape[2 + i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x_shape[2 + i])
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    else:
        pads = list(ctx.attr("pads", [0] * (2 * spatial)))
    if spatial == 1:  # lift to 2-D with H = 1
        strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
    return tuple(strides), tuple(pads), tuple(dilations), int(ctx.attr("group", 1))


def lift(a):
    """[N, C, L] -> [N, C, 1, L] (1-D convolution as 2-D)."""
    return a.reshape(a.shape[0], a.shape[1], 1, a.shape[2]) if a.ndim == 3 else a
