"""Exact integer accumulation kernels (matmul, conv) and accumulator-width handling.

Operands are integers (codes minus zero points). A float64 BLAS product is used only where it is
provably exact: every partial sum of K products with |a| <= a_max, |b| <= b_max is an integer of
magnitude <= K * a_max * b_max, and doubles represent every integer below 2^53 exactly, so if that
bound is < 2^53 the product is exact whatever order BLAS sums in. The bound is computed from the
storage bit widths (not from the data) and checked here; otherwise int64 numpy arithmetic is used.
"""
from __future__ import annotations

import numpy as np

from simulator.errors import SimulatorError

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
INT64_EXACT = 1 << 63


def accumulation_bound(k: int, a_max: int, b_max: int) -> int:
    """Largest |partial sum| of k products with |a| <= a_max, |b| <= b_max."""
    return int(k) * int(a_max) * int(b_max)


def _accumulate_dtype(k: int, a_max: int, b_max: int):
    bound = accumulation_bound(k, a_max, b_max)
    if bound < FLOAT32_EXACT:  # small split-K groups: single-precision BLAS is exact too
        return np.float32
    if bound < FLOAT64_EXACT:
        return np.float64
    if bound < INT64_EXACT:
        return np.int64
    raise SimulatorError(f"an integer accumulation of {k} products of |a| <= {a_max}, |b| <= {b_max} "
                         f"can exceed int64; the simulator cannot run it exactly")


def int_matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int) -> np.ndarray:
    """Exact a @ b for integer arrays (numpy matmul broadcasting). Returns float32/float64 holding
    exact integers when the bound proves it (< 2^24 / < 2^53), else int64."""
    dtype = _accumulate_dtype(a.shape[-1], a_max, b_max)
    return np.matmul(a.astype(dtype, copy=False), b.astype(dtype, copy=False))


def conv_windows(x: np.ndarray, kernel: tuple[int, int], strides, pads, dilations):
    """Yield ((i, j), window) for each kernel offset: window = padded x sampled at the output grid,
    shape [N, C, Ho, Wo] (a strided view). pads = (top, left, bottom, right)."""
    kh, kw = kernel
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    sh, sw = strides
    dh, dw = dilations
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(pads) else x
    hp, wp = h + top + bottom, w + left + right
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    if ho <= 0 or wo <= 0:
        raise SimulatorError(f"convolution output would be empty (input {h}x{w}, kernel {kh}x{kw})")
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            yield (i, j), xp[:, :, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw]


def conv2d(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int, dtype) -> np.ndarray:
    """Direct 2-D convolution as a sum over kernel offsets of [Co, C] @ [C, N*Ho*Wo] products,
    computed in `dtype` (float32 for float convs; float64/int64 for exact integer convs).
    x [N, C, H, W], w [Co, C/group, kh, kw] -> [N, Co, Ho, Wo]."""
    n, c, _, _ = x.shape
    co, cg, kh, kw = w.shape
    if c != cg * group or co % group:
        raise SimulatorError(f"conv shapes do not match: input channels {c}, weight {list(w.shape)}, group {group}")
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    cog = co // group
    out = None
    for (i, j), win in conv_windows(x, (kh, kw), strides, pads, dilations):
        _, _, ho, wo = win.shape
        if out is None:
            out = np.zeros((group, cog, n * ho * wo), dtype)
        cols = win.transpose(1, 0, 2, 3).reshape(group, cg, n * ho * wo)     # [g, C/g, N*Ho*Wo]
        out += np.matmul(w[:, :, i, j].reshape(group, cog, cg), cols)
    ho_wo = out.shape[-1] // n
    return out.reshape(co, n, ho_wo).transpose(1, 0, 2).reshape(n, co, ho, wo)


def int_conv2d(x: np.ndarray, w: np.ndarray, x_max: int, w_max: int, strides, pads, dilations,
               group: int = 1) -> np.ndarray:
    """Exact integer convolution (float64 where the bound proves it exact, else int64)."""
    k = (w.shape[1]) * w.shape[2] * w.shape[3]
    return conv2d(x, w, strides, pads, dilations, group, _accumulate_dtype(k, x_max, w_max))


def int_conv2d_pixel_groups(x: np.ndarray, w: np.ndarray, pixel_group: np.ndarray, n_groups: int,
                            x_max: int, w_max: int, strides, pads, dilations) -> np.ndarray:
    """One accumulator per input-pixel group: out[g] = conv(x masked to the pixels of group g).

    Computed without G convolutions: for each kernel offset, output column p reads exactly one
    input pixel, so that offset's product column is added to the accumulator of that pixel's group.
    The sums are exact integers, so this equals G masked partial convolutions bit for bit.
    x [N, C, H, W]; pixel_group int [H, W] in 0..G-1 -> [G, N, Co, Ho, Wo]."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    if cg != c:
        raise SimulatorError("pixel-group convolution supports group=1 only")
    dtype = _accumulate_dtype(c * kh * kw, x_max, w_max)
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    # group index of every padded input pixel; padding gets group 0 (its values are 0 anyway)
    gid = pixel_group.astype(np.int64)[None, None]
    gid = np.broadcast_to(gid, (n, 1, h, wd))
    gwin = dict(conv_windows(gid, (kh, kw), strides, pads, dilations))
    acc = None
    for (i, j), win in conv_windows(x, (kh, kw), strides, pads, dilations):
        _, _, ho, wo = win.shape
        p = n * ho * wo
        if acc is None:
            acc = np.zeros((n_groups, co, p), dtype)
        prod = w[:, :, i, j] @ win.transpose(1, 0, 2, 3).reshape(c, p)        # [Co, P]
        groups = gwin[(i, j)].transpose(1, 0, 2, 3).reshape(p)
        if kh == kw == 1:
            acc[groups, :, np.arange(p)] = prod.T                              # one group per column
            continue
        onehot = (groups[None, :] == np.arange(n_groups)[:, None]).astype(dtype)   # [G, P], exact 0/1
        acc += prod[None] * onehot[:, None, :]
    return acc.reshape(n_groups, co, n, ho, wo).transpose(0, 2, 1, 3, 4)


def apply_accumulator_width(acc: np.ndarray, bits: int, overflow: str, bound: int | None = None
                            ) -> tuple[np.ndarray, int, float]:
    """Model a `bits`-wide accumulator: returns (acc after wrap/saturate, number of overflowed values,
    largest |acc| seen before). Exact: acc holds integers (float < 2^24 / 2^53, or int64).
    With `bound` (a proven |acc| bound) that fits, nothing can overflow and the scan is skipped (peak = -1)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if bound is not None and bound <= hi:
        return acc, 0, -1.0
    peak = float(np.max(np.abs(acc))) if acc.size else 0.0
    if peak <= hi:
        return acc, 0, peak
    over = (acc < lo) | (acc > hi)
    count = int(np.count_nonzero(over))
    if overflow == "saturate":
        return np.clip(acc, lo, hi), count, peak
    if acc.dtype == np.float32:
        acc = acc.astype(np.float64)
    wrapped = np.mod(acc - lo, float(1 << bits) if acc.dtype == np.float64 else (1 << bits)) + lo
    return wrapped.astype(acc.dtype), count, peak
