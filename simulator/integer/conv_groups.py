"""Split-K convolutions with one accumulator per input group: channel groups (one grouped convolution) and
pixel groups (a scatter-add per kernel offset). Both equal G masked partial convolutions bit for bit."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from simulator.errors import SimulatorError
from simulator.integer.bounds import accumulate_dtype
from simulator.integer.conv import exact_conv2d
from simulator.integer.geometry import conv_windows
from simulator.integer.int8 import int8_matmul, int8_parts, worth_int8
from simulator.integer.matmul import require_exact_float32_products
from simulator.integer.threads import threads_for


class ChannelLayout(NamedTuple):
    """Input channels side by side per group, each group zero-padded to the widest."""
    width: int            # channels of the widest group (the block size)
    order: np.ndarray     # the channels sorted by group (stable)
    groups: np.ndarray    # the group of each channel in `order`
    slots: np.ndarray     # the slot of each channel in `order` within its group's block


def channel_group_layout(channel_group: np.ndarray, n_groups: int) -> ChannelLayout:
    counts = np.bincount(channel_group, minlength=n_groups)
    order = np.argsort(channel_group, kind="stable")
    groups = channel_group[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return ChannelLayout(int(counts.max()), order, groups, np.arange(len(order)) - starts[groups])


def int_conv2d_channel_groups(x: np.ndarray, w: np.ndarray, channel_group: np.ndarray, n_groups: int,
                              x_max: int, w_max: int, strides, pads, dilations) -> np.ndarray:
    """One accumulator per input-channel group (split-K), all from one grouped convolution: block g of
    the padded input holds group g's channels (then zeros, which add nothing), so output block g is
    exactly conv(x[:, group g], w[:, group g]). x [N, C, H, W]; channel_group int [C] in 0..G-1
    -> [G, N, Co, Ho, Wo]."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    layout = channel_group_layout(channel_group, n_groups)
    width = layout.width
    dtype = accumulate_dtype(width * kh * kw, x_max, w_max)
    xg = np.zeros((n, n_groups * width, h, wd), dtype)
    xg[:, layout.groups * width + layout.slots] = x[:, layout.order]
    wg = np.zeros((n_groups, co, width, kh, kw), dtype)
    wg[layout.groups, :, layout.slots] = w[:, layout.order].transpose(1, 0, 2, 3)
    acc = exact_conv2d(xg, wg.reshape(n_groups * co, width, kh, kw), strides, pads, dilations, n_groups)
    return acc.reshape(n, n_groups, co, acc.shape[2], acc.shape[3]).transpose(1, 0, 2, 3, 4)


def int_conv2d_pixel_groups(x: np.ndarray, w: np.ndarray, pixel_group: np.ndarray, n_groups: int,
                            x_max: int, w_max: int, strides, pads, dilations) -> np.ndarray:
    """One accumulator per input-pixel group: out[g] = conv(x masked to the pixels of group g).

    Computed without G convolutions: for each kernel offset, output pixel p reads exactly one
    input pixel, so that offset's product for p is added to the accumulator of that pixel's group
    (one scatter-add per offset; the targets of one offset are distinct). Products on the int8
    engine when it holds (int64 result), else in the float type the bound proves exact.
    x [N, C, H, W]; pixel_group int [H, W] in 0..G-1 -> [G, N, Co, Ho, Wo]."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    if cg != c:
        raise SimulatorError("pixel-group convolution supports group=1 only")
    # group index of every padded input pixel; padding gets group 0 (its values are 0 anyway)
    gid = np.broadcast_to(pixel_group.astype(np.int64)[None, None], (n, 1, h, wd))
    gwin = dict(conv_windows(gid, (kh, kw), strides, pads, dilations))
    _, _, ho, wo = gwin[(0, 0)].shape
    p = n * ho * wo
    parts_x = int8_parts(x) if worth_int8(x, w, c, strides) else None
    parts_w = int8_parts(w) if parts_x is not None else None
    if parts_w is not None:
        return _pixel_groups_int8(parts_x, parts_w, gwin, n_groups, (n, co, ho, wo), strides, pads, dilations)
    dtype = accumulate_dtype(c * kh * kw, x_max, w_max)
    require_exact_float32_products()
    tx = torch.from_numpy(np.ascontiguousarray(x.astype(dtype, copy=False)))
    tw = torch.from_numpy(np.ascontiguousarray(w.astype(dtype, copy=False)))
    top, left, bottom, right = pads
    tx = torch.nn.functional.pad(tx, (left, right, top, bottom)) if any(pads) else tx
    columns = np.arange(p)
    with threads_for(p * co * c * kh * kw):
        acc = torch.zeros((co, n_groups * p), dtype=tx.dtype)
        for (i, j), groups in gwin.items():
            r0, c0 = i * dilations[0], j * dilations[1]
            win = tx[:, :, r0:r0 + strides[0] * (ho - 1) + 1:strides[0], c0:c0 + strides[1] * (wo - 1) + 1:strides[1]]
            prod = tw[:, :, i, j] @ win.permute(1, 0, 2, 3).reshape(c, p)              # [Co, P]
            target = groups.transpose(1, 0, 2, 3).reshape(p) * p + columns           # column p -> its group's block
            acc.index_add_(1, torch.from_numpy(target), prod)
    return acc.numpy().reshape(co, n_groups, n, ho, wo).transpose(1, 2, 0, 3, 4)


def _pixel_groups_int8(parts_x, parts_w, gwin: dict, n_groups: int, out_shape, strides, pads, dilations):
    """The int8-engine schedule: [P, Co] products per kernel offset, scattered into [G * P, Co] (int64)."""
    n, co, ho, wo = out_shape
    c, kh, kw = parts_w[0][1].shape[1:]
    p = n * ho * wo
    windows = [(f, dict(conv_windows(part, (kh, kw), strides, pads, dilations))) for f, part in parts_x]
    with threads_for(p * co * c * kh * kw // 8):
        acc = torch.zeros((n_groups * p, co), dtype=torch.int64)
        for (i, j), groups in gwin.items():
            cols = [(f, win[(i, j)].transpose(0, 2, 3, 1).reshape(p, c)) for f, win in windows]
            prod = int8_matmul(cols, [(f, part[:, :, i, j].T) for f, part in parts_w])
            target = groups.reshape(p) * p + np.arange(p)                    # row p -> its group's block
            acc.index_add_(0, torch.from_numpy(target), torch.from_numpy(prod).to(torch.int64))
    return acc.numpy().reshape(n_groups, n, ho, wo, co).transpose(0, 1, 4, 2, 3)
