"""2-D convolution: float (any dtype), exact integer on torch, exact integer on the int8 engine."""
from __future__ import annotations

import numpy as np
import torch

from simulator.errors import SimulatorError
from simulator.integer.bounds import accumulate_dtype
from simulator.integer.geometry import conv_geometry, conv_windows, im2col
from simulator.integer.int8 import int8_matmul, int8_parts, worth_int8
from simulator.integer.threads import threads_for


def check_conv_shapes(c: int, w_shape, group: int) -> None:
    if c != w_shape[1] * group or w_shape[0] % group:
        raise SimulatorError(f"conv shapes do not match: input channels {c}, weight {list(w_shape)}, group {group}")


def conv2d(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int, dtype) -> np.ndarray:
    """Direct 2-D convolution as a sum over kernel offsets of [Co, C] @ [C, N*Ho*Wo] products,
    computed in `dtype` (float32 for float convs; float64/int64 for exact integer convs).
    x [N, C, H, W], w [Co, C/group, kh, kw] -> [N, Co, Ho, Wo]."""
    n = x.shape[0]
    co, cg, kh, kw = w.shape
    check_conv_shapes(x.shape[1], w.shape, group)
    ho, wo = conv_geometry(x.shape[2], x.shape[3], (kh, kw), strides, pads, dilations)
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    cog = co // group
    out = np.zeros((group, cog, n * ho * wo), dtype)
    for (i, j), win in conv_windows(x, (kh, kw), strides, pads, dilations):
        cols = win.transpose(1, 0, 2, 3).reshape(group, cg, n * ho * wo)     # [g, C/g, N*Ho*Wo]
        out += np.matmul(w[:, :, i, j].reshape(group, cog, cg), cols)
    return out.reshape(co, n, ho * wo).transpose(1, 0, 2).reshape(n, co, ho, wo)


def exact_conv2d(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int = 1) -> np.ndarray:
    """Convolution of integer-valued arrays already in a type accumulate_dtype chose, on torch.
    Exact for the same reason as exact_matmul, provided the algorithm only forms sums of products
    (direct or im2col + GEMM): NNPACK's Winograd/FFT convolutions are switched off, and oneDNN's
    float32 convolution must run in IEEE float32 (not bf16/tf32), which is checked."""
    n = x.shape[0]
    co, cg, kh, kw = w.shape
    check_conv_shapes(x.shape[1], w.shape, group)
    if torch.backends.mkldnn.conv.fp32_precision not in ("none", "ieee"):
        raise SimulatorError("torch's oneDNN float32 convolution precision must be IEEE for exact integer convolutions")
    ho, wo = conv_geometry(x.shape[2], x.shape[3], (kh, kw), strides, pads, dilations)
    top, left, bottom, right = pads
    tx = torch.from_numpy(np.ascontiguousarray(x))
    if (top, left) != (bottom, right):  # torch pads symmetrically: pad asymmetric borders first
        tx, padding = torch.nn.functional.pad(tx, (left, right, top, bottom)), (0, 0)
    else:
        padding = (top, left)
    with torch.backends.nnpack.flags(enabled=False), threads_for(n * co * ho * wo * cg * kh * kw):
        y = torch.nn.functional.conv2d(tx, torch.from_numpy(np.ascontiguousarray(w)), None, tuple(strides), padding,
                                       tuple(dilations), group)
    return y.numpy()


def int_conv2d(x: np.ndarray, w: np.ndarray, x_max: int, w_max: int, strides, pads, dilations,
               group: int = 1) -> np.ndarray:
    """Exact integer convolution: int8 dot products (integer result) where the int8 engine holds and the
    operands split into int8 parts, else float32/float64 where the bound proves it exact, else int64."""
    k = w.shape[1] * w.shape[2] * w.shape[3]
    if group == 1 and worth_int8(x, w, k, strides):
        parts_x, parts_w = int8_parts(x), int8_parts(w)
        if parts_x is not None and parts_w is not None:
            return int8_conv2d(parts_x, parts_w, strides, pads, dilations)
    dtype = accumulate_dtype(k, x_max, w_max)
    return exact_conv2d(x.astype(dtype, copy=False), w.astype(dtype, copy=False), strides, pads, dilations, group)


def int8_conv2d(parts_x, parts_w, strides, pads, dilations) -> np.ndarray:
    """Exact convolution of int8-split operands (group = 1) as im2col + int8 dot products -> int32/int64 [N, Co, Ho, Wo]."""
    w0 = parts_w[0][1]
    co, c, kh, kw = w0.shape
    if parts_x[0][1].shape[1] != c:
        raise SimulatorError(f"conv shapes do not match: input channels {parts_x[0][1].shape[1]}, weight {list(w0.shape)}")
    columns = [(f, im2col(part, (kh, kw), strides, pads, dilations)) for f, part in parts_x]
    n, ho, wo = columns[0][1].n, columns[0][1].ho, columns[0][1].wo
    acc = int8_matmul([(f, col.cols) for f, col in columns],
                      [(f, part.reshape(co, -1).T) for f, part in parts_w])     # [N*Ho*Wo, Co]
    return acc.reshape(n, ho, wo, co).transpose(0, 3, 1, 2)
