"""Integer convolution of two QTensors, as an accelerator computes it.

- per-tensor activation scale: one integer convolution, rescaled per output channel;
- channel groups (scale varies along the input-channel axis = the reduction): split-K, one integer
  accumulator per channel group, each rescaled, then added (small layers: all groups from one grouped
  convolution of the channels laid out per group; large ones: a convolution per group);
- pixel groups (scale varies along H, W): an input pixel's scale does not factor out of a kxk patch,
  so there is one accumulator per pixel group (partial convolutions over masked inputs); for a 1x1
  conv every output pixel reads one input pixel, i.e. per-row output scales.
Weights: per-output-channel scales (they factor out of every sum).
"""
from __future__ import annotations

import numpy as np

from simulator.errors import Unsupported
from simulator.integer import (
    accumulation_bound,
    int_conv2d,
    int_conv2d_channel_groups,
    int_conv2d_pixel_groups,
)
from simulator.qtensor import QTensor, varies
from simulator.shapes import numel


def quantized_conv(x: QTensor, w: QTensor, strides, pads, dilations, group: int, accumulate, epilogue):
    """-> (float32 result without bias, number of accumulator groups)."""
    if x.ndim != 4 or w.ndim != 4:
        raise Unsupported("only 2-D convolutions run on the integer path")
    if x.mask is not None or w.mask is not None:
        raise Unsupported("partly floating-point operand")
    sx, sw = x.scale.astype(np.float32), w.scale.astype(np.float32)
    if varies(sx, 0) or any(varies(sw, ax) for ax in (1, 2, 3)):
        raise Unsupported("scale varies along the batch axis or along a weight reduction axis")
    by_channel, by_pixel = varies(sx, 1), varies(sx, 2) or varies(sx, 3)
    if by_channel and by_pixel:
        raise Unsupported("activation scale varies along channels and pixels")
    sw_out = sw.reshape(1, -1, 1, 1) if sw.size > 1 else sw.reshape(1, 1, 1, 1)
    xi, wi = x.integers(), w.integers()
    x_max, w_max = x.operand_bound(), w.operand_bound()
    bound = accumulation_bound(numel(w.shape[1:]), x_max, w_max)

    def acc_of(a):
        return accumulate(a, False, bound)
    terms = []
    if by_pixel:
        if group != 1:
            raise Unsupported("pixel groups with a grouped convolution")
        h, wd = x.shape[2], x.shape[3]
        per_pixel = np.broadcast_to(sx[0, 0], (h, wd))
        values, gid = np.unique(per_pixel, return_inverse=True)
        acc = int_conv2d_pixel_groups(xi, wi, gid.reshape(h, wd), len(values), x_max, w_max,
                                      strides, pads, dilations)
        terms = [(acc_of(acc[g]), values[g] * sw_out) for g in range(len(values))]
    elif by_channel:
        if group != 1:
            raise Unsupported("channel groups with a grouped convolution")
        per_channel = sx[0, :, 0, 0]
        values, gid = np.unique(per_channel, return_inverse=True)
        gid = gid.reshape(-1)
        if _one_grouped_conv(gid, len(values), x, w, strides):
            acc = int_conv2d_channel_groups(xi, wi, gid, len(values), x_max, w_max, strides, pads, dilations)
            return epilogue.rescale_sum((acc_of(acc[g]), value * sw_out) for g, value in enumerate(values)), len(values)

        def group_terms():  # one accumulator at a time: rescaled and added before the next is computed
            for g, value in enumerate(values):
                idx = np.nonzero(gid == g)[0]
                acc = int_conv2d(xi[:, idx], wi[:, idx], x_max, w_max, strides, pads, dilations)
                yield acc_of(acc), value * sw_out
        return epilogue.rescale_sum(group_terms()), len(values)
    else:
        acc = int_conv2d(xi, wi, x_max, w_max, strides, pads, dilations, group)
        terms = [(acc_of(acc), sx.reshape(-1)[0] * sw_out)]
    return epilogue.rescale_sum(terms), len(terms)


GROUPED_CONV_MAX_WORK = 1 << 26  # padded multiply-adds up to which one grouped conv beats a conv per group


def _one_grouped_conv(gid: np.ndarray, n_groups: int, x: QTensor, w: QTensor, strides) -> bool:
    """Whether the channel groups run as one grouped convolution (fewer, larger calls: faster on small
    layers) rather than one convolution each: when padding the groups to the widest one at most doubles
    the work, and the work is small enough that per-call overhead, not arithmetic, dominates."""
    padded = n_groups * int(np.bincount(gid).max())
    work = x.shape[0] * (x.shape[2] // strides[0]) * (x.shape[3] // strides[1]) * w.shape[0] * padded \
        * w.shape[2] * w.shape[3]
    return padded <= 2 * x.shape[1] and work <= GROUPED_CONV_MAX_WORK
