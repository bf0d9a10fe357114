"""Exact integer accumulation kernels (matmul, conv) and accumulator-width handling.

Operands are integers (codes minus zero points). Three engines, each used only where it is exact:
- float BLAS (torch): every partial sum of K products with |a| <= a_max, |b| <= b_max is an integer
  of magnitude <= K * a_max * b_max; float32 / float64 represent every integer below 2^24 / 2^53, so
  if the bound (from the storage bit widths, checked in accumulate_dtype) is below that, the product
  is exact whatever order BLAS sums in (reduced-precision bf16/tf32 modes and Winograd/FFT
  convolutions are refused or switched off, see exact_matmul / exact_conv2d); else int64;
- int8 dot products (torch._int_mm on VNNI/AMX): operands split exactly into int8 parts
  (int8_parts), int32 accumulators that cannot overflow (K <= INT8_MAX_K), parts combined in
  int32/int64 by a bound; used only if int8_engine() (CPU check + worst-case self-test) holds;
- int64 numpy arithmetic as the last resort.
Integers are integers: whichever engine runs, the accumulators are the same numbers.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from simulator.errors import SimulatorError
from simulator.shapes import broadcast_shape, numel

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
INT64_EXACT = 1 << 63


def accumulation_bound(k: int, a_max: int, b_max: int) -> int:
    """Largest |partial sum| of k products with |a| <= a_max, |b| <= b_max."""
    return int(k) * int(a_max) * int(b_max)


def accumulate_dtype(k: int, a_max: int, b_max: int):
    """The cheapest type in which every partial sum of k products is provably an exact integer."""
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
    dtype = accumulate_dtype(a.shape[-1], a_max, b_max)
    return np.matmul(a.astype(dtype, copy=False), b.astype(dtype, copy=False))


SMALL_WORK = 1 << 26  # multiply-adds below which one thread beats waking (and waiting for) the others


@contextlib.contextmanager
def threads_for(work: int):
    """Small products on one torch thread: on a busy machine a parallel region can wait milliseconds for
    a descheduled helper thread, far longer than the product itself."""
    n = torch.get_num_threads()
    if n == 1 or work >= SMALL_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (numpy broadcasting) for integer-valued arrays already in a type accumulate_dtype chose,
    on torch's BLAS: every partial sum is then an integer below the type's exact bound, so any
    summation order gives the exact result (int64: integer arithmetic)."""
    if torch.get_float32_matmul_precision() != "highest":  # reduced-precision (bf16/tf32) products are not exact
        raise SimulatorError("torch float32 matmul precision must be 'highest' for exact integer products")
    work = numel(broadcast_shape(a.shape[:-1], b.shape[:-2] + (1,))) * a.shape[-1] * b.shape[-1]
    with threads_for(work):
        return torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def run_blocks(jobs: list, fn) -> None:
    """fn(*job) for every job (independent blocks of one product, writing disjoint outputs), spread over
    torch's thread count with single-threaded BLAS inside each block: blocked schedules issue many
    small products, for which BLAS's own threads cost more in start-up and synchronisation than they
    save. numpy and torch release the GIL in the heavy calls."""
    workers = min(torch.get_num_threads(), len(jobs))
    if workers <= 1:
        for job in jobs:
            fn(*job)
        return
    global _POOL, _POOL_WORKERS
    if _POOL is None or _POOL_WORKERS != workers:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        # torch's thread count is per thread (OpenMP): set once in each worker, the caller's is untouched
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix="dgq-sim", initializer=torch.set_num_threads,
                                   initargs=(1,))
        _POOL_WORKERS = workers
    for _ in _POOL.map(lambda job: fn(*job), jobs):
        pass


_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0


def serialised(fn):
    """fn behind a lock (the accumulator callback updates shared statistics from block threads)."""
    lock = threading.Lock()

    def call(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)
    return call


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


def exact_conv2d(x: np.ndarray, w: np.ndarray, strides, pads, dilations, group: int = 1) -> np.ndarray:
    """Convolution of integer-valued arrays already in a type accumulate_dtype chose, on torch.
    Exact for the same reason as exact_matmul, provided the algorithm only forms sums of products
    (direct or im2col + GEMM): NNPACK's Winograd/FFT convolutions are switched off, and oneDNN's
    float32 convolution must run in IEEE float32 (not bf16/tf32), which is checked."""
    n, c, _, _ = x.shape
    co, cg, kh, kw = w.shape
    if c != cg * group or co % group:
        raise SimulatorError(f"conv shapes do not match: input channels {c}, weight {list(w.shape)}, group {group}")
    if torch.backends.mkldnn.conv.fp32_precision not in ("none", "ieee"):
        raise SimulatorError("torch's oneDNN float32 convolution precision must be IEEE for exact integer convolutions")
    top, left, bottom, right = pads
    tx = torch.from_numpy(np.ascontiguousarray(x))
    if (top, left) != (bottom, right):
        tx, padding = torch.nn.functional.pad(tx, (left, right, top, bottom)), (0, 0)
    else:
        padding = (top, left)
    ho = (tx.shape[2] + 2 * padding[0] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (tx.shape[3] + 2 * padding[1] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if ho <= 0 or wo <= 0:
        raise SimulatorError(f"convolution output would be empty (input {x.shape[2]}x{x.shape[3]}, kernel {kh}x{kw})")
    with torch.backends.nnpack.flags(enabled=False), threads_for(n * co * ho * wo * cg * kh * kw):
        y = torch.nn.functional.conv2d(tx, torch.from_numpy(np.ascontiguousarray(w)), None, tuple(strides), padding,
                                       tuple(dilations), group)
    return y.numpy()


def int_conv2d(x: np.ndarray, w: np.ndarray, x_max: int, w_max: int, strides, pads, dilations,
               group: int = 1) -> np.ndarray:
    """Exact integer convolution: int8 dot products (integer result) where int8_engine() holds and the
    operands split into int8 parts, else float32/float64 where the bound proves it exact, else int64."""
    k = w.shape[1] * w.shape[2] * w.shape[3]
    if group == 1 and k <= INT8_MAX_K and _conv_work(x, w, strides) >= INT8_MIN_WORK and int8_engine():
        parts_x, parts_w = int8_parts(x), int8_parts(w)
        if parts_x is not None and parts_w is not None:
            return int8_conv2d(parts_x, parts_w, strides, pads, dilations)
    dtype = accumulate_dtype(k, x_max, w_max)
    return exact_conv2d(x.astype(dtype, copy=False), w.astype(dtype, copy=False), strides, pads, dilations, group)


def channel_group_layout(channel_group: np.ndarray, n_groups: int):
    """Input channels side by side per group, each group zero-padded to the widest:
    -> (width, order of the channels, group of each, slot of each within its group's block)."""
    counts = np.bincount(channel_group, minlength=n_groups)
    order = np.argsort(channel_group, kind="stable")
    groups = channel_group[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return int(counts.max()), order, groups, np.arange(len(order)) - starts[groups]


def int_conv2d_channel_groups(x: np.ndarray, w: np.ndarray, channel_group: np.ndarray, n_groups: int,
                              x_max: int, w_max: int, strides, pads, dilations) -> np.ndarray:
    """One accumulator per input-channel group (split-K), all from one grouped convolution: block g of
    the padded input holds group g's channels (then zeros, which add nothing), so output block g is
    exactly conv(x[:, group g], w[:, group g]). x [N, C, H, W]; channel_group int [C] in 0..G-1
    -> [G, N, Co, Ho, Wo]."""
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    width, order, groups, slots = channel_group_layout(channel_group, n_groups)
    dtype = accumulate_dtype(width * kh * kw, x_max, w_max)
    xg = np.zeros((n, n_groups * width, h, wd), dtype)
    xg[:, groups * width + slots] = x[:, order]
    wg = np.zeros((n_groups, co, width, kh, kw), dtype)
    wg[groups, :, slots] = w[:, order].transpose(1, 0, 2, 3)
    acc = exact_conv2d(xg, wg.reshape(n_groups * co, width, kh, kw), strides, pads, dilations, n_groups)
    return acc.reshape(n, n_groups, co, acc.shape[2], acc.shape[3]).transpose(1, 0, 2, 3, 4)


# ---- int8 dot products (VNNI / AMX through torch._int_mm) ------------------------------------------------
INT8_MAX_K = ((1 << 31) - 1) // (128 * 128)  # int32 accumulator: K products of |a|, |b| <= 128 cannot overflow
INT8_MIN_WORK = 1 << 24  # multiply-adds below which splitting into parts and im2col cost more than they save


def _conv_work(x: np.ndarray, w: np.ndarray, strides) -> int:
    """Approximate multiply-adds of a convolution (output pixels estimated from the strides)."""
    return x.shape[0] * (x.shape[2] // strides[0]) * (x.shape[3] // strides[1]) * numel(w.shape)


def _cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def int8_engine() -> bool:
    """Whether torch's int8 x int8 -> int32 matmul is exact integer arithmetic on this machine: the CPU has
    VNNI/AMX dot-product instructions (which accumulate in int32; the pre-VNNI u8*s8 instruction saturates
    pairs in int16), and a worst-case self-test (every product at the int8 extremes, long reductions)
    equals int64 arithmetic. Otherwise the float paths (bound-checked) are used."""
    if not hasattr(torch, "_int_mm") or not ({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags()):
        return False
    rng = np.random.default_rng(0)
    for m, k, n in [(1, 1, 1), (33, 300, 17), (64, 4099, 40)]:
        a = rng.choice(np.array([-128, -127, 127], np.int8), (m, k))
        b = rng.choice(np.array([-128, 127], np.int8), (k, n))
        a[0], b[:, 0] = -128, -128                           # the largest positive products, all summed
        if m > 1:
            a[1], b[:, -1] = 127, -128                       # the largest negative products
        got = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        if not np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64)):
            return False
    return True


def int8_parts(v: np.ndarray):
    """Integer array -> [(factor, int8 array)] with v == sum(factor * part), exactly; None if |v| > 256.
    v = 2 * (v >> 1) + (v & 1) covers [-256, 255] (8-bit codes minus a zero point) with two parts."""
    lo, hi = int(v.min()), int(v.max())
    if -128 <= lo and hi <= 127:
        return [(1, v.astype(np.int8))]
    if -256 <= lo and hi <= 255:
        v = v.astype(np.int32, copy=False)
        return [(2, (v >> 1).astype(np.int8)), (1, (v & 1).astype(np.int8))]
    return None


def int8_matmul(parts_a, parts_b) -> np.ndarray:
    """Exact sum_ab fa * fb * (A_a @ B_b) for 2-D int8 parts ([M, K] and [K, N], K <= INT8_MAX_K): int32
    when K * max|a| * max|b| (bounded from the parts: |part| <= 128) < 2^31, else int64."""
    k = parts_a[0][1].shape[1]
    a_max = sum(abs(f) for f, _ in parts_a) * 128
    b_max = sum(abs(f) for f, _ in parts_b) * 128
    dtype = torch.int32 if accumulation_bound(k, a_max, b_max) < (1 << 31) else torch.int64
    acc = None
    with threads_for(parts_a[0][1].shape[0] * k * parts_b[0][1].shape[1] // 8):  # int8 products are cheap
        for fa, a in parts_a:
            ta = torch.from_numpy(np.ascontiguousarray(a))
            for fb, b in parts_b:
                part = torch._int_mm(ta, torch.from_numpy(np.ascontiguousarray(b))).to(dtype)
                if fa * fb != 1:
                    part.mul_(fa * fb)
                acc = part if acc is None else acc.add_(part)
    return acc.numpy()


def im2col(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """[N, C, H, W] -> [N * Ho * Wo, C * kh * kw] patches (zero padding), in x's dtype."""
    kh, kw = kernel
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(pads) else x
    n, c, hp, wp = xp.shape
    ho = (hp - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (wp - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    if ho <= 0 or wo <= 0:
        raise SimulatorError(f"convolution output would be empty (input {x.shape[2]}x{x.shape[3]}, kernel {kh}x{kw})")
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, ho, wo, c, kh, kw),
        (s[0], s[2] * strides[0], s[3] * strides[1], s[1], s[2] * dilations[0], s[3] * dilations[1]), writeable=False)
    return np.ascontiguousarray(view).reshape(n * ho * wo, c * kh * kw), (n, ho, wo)


def int8_conv2d(parts_x, parts_w, strides, pads, dilations) -> np.ndarray:
    """Exact convolution of int8-split operands (group = 1) as im2col + int8 dot products -> int32/int64 [N, Co, Ho, Wo]."""
    w0 = parts_w[0][1]
    co, c, kh, kw = w0.shape
    if parts_x[0][1].shape[1] != c:
        raise SimulatorError(f"conv shapes do not match: input channels {parts_x[0][1].shape[1]}, weight {list(w0.shape)}")
    cols = []
    for f, part in parts_x:
        col, (n, ho, wo) = im2col(part, (kh, kw), strides, pads, dilations)
        cols.append((f, col))
    acc = int8_matmul(cols, [(f, part.reshape(co, -1).T) for f, part in parts_w])     # [N*Ho*Wo, Co]
    return acc.reshape(n, ho, wo, co).transpose(0, 3, 1, 2)


def int_conv2d_pixel_groups(x: np.ndarray, w: np.ndarray, pixel_group: np.ndarray, n_groups: int,
                            x_max: int, w_max: int, strides, pads, dilations) -> np.ndarray:
    """One accumulator per input-pixel group: out[g] = conv(x masked to the pixels of group g).

    Computed without G convolutions: for each kernel offset, output pixel p reads exactly one
    input pixel, so that offset's product for p is added to the accumulator of that pixel's group
    (one scatter-add per offset; the targets of one offset are distinct). Products on the int8
    engine when it holds (int64 result), else in the float type the bound proves exact. The sums are exact
    integers, so this equals G masked partial convolutions bit for bit.
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
    big = c <= INT8_MAX_K and _conv_work(x, w, strides) >= INT8_MIN_WORK
    parts_x = int8_parts(x) if big and int8_engine() else None
    parts_w = int8_parts(w) if parts_x is not None else None
    if parts_w is not None:   # int8 dot products: [P, Co] per kernel offset, scattered into [G * P, Co]
        windows = [(f, dict(conv_windows(part, (kh, kw), strides, pads, dilations))) for f, part in parts_x]
        with threads_for(p * co * c * kh * kw // 8):
            acc = torch.zeros((n_groups * p, co), dtype=torch.int64)
            for (i, j), groups in gwin.items():
                cols = [(f, win[(i, j)].transpose(0, 2, 3, 1).reshape(p, c)) for f, win in windows]
                prod = int8_matmul(cols, [(f, part[:, :, i, j].T) for f, part in parts_w])
                target = groups.reshape(p) * p + np.arange(p)                    # row p -> its group's block
                acc.index_add_(0, torch.from_numpy(target), torch.from_numpy(prod).to(torch.int64))
        return acc.numpy().reshape(n_groups, n, ho, wo, co).transpose(0, 1, 4, 2, 3)
    dtype = accumulate_dtype(c * kh * kw, x_max, w_max)
    if torch.get_float32_matmul_precision() != "highest":  # reduced-precision (bf16/tf32) products are not exact
        raise SimulatorError("torch float32 matmul precision must be 'highest' for exact integer products")
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
