"""The int8 dot-product engine (torch._int_mm on VNNI / AMX): used only where it is exact integer arithmetic."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from simulator.integer.bounds import accumulation_bound
from simulator.integer.threads import threads_for
from simulator.shapes import numel

INT8_MAX_K = ((1 << 31) - 1) // (128 * 128)  # int32 accumulator: K products of |a|, |b| <= 128 cannot overflow
INT8_MIN_WORK = 1 << 24  # multiply-adds below which splitting into parts and im2col cost more than they save


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


def conv_work(x: np.ndarray, w: np.ndarray, strides) -> int:
    """Approximate multiply-adds of a convolution (output pixels estimated from the strides)."""
    return x.shape[0] * (x.shape[2] // strides[0]) * (x.shape[3] // strides[1]) * numel(w.shape)


def worth_int8(x: np.ndarray, w: np.ndarray, k: int, strides) -> bool:
    """A convolution with reduction length k goes to the int8 engine when its int32 accumulators cannot
    overflow, it is large enough to repay splitting, and the engine is exact on this machine."""
    return k <= INT8_MAX_K and conv_work(x, w, strides) >= INT8_MIN_WORK and int8_engine()
