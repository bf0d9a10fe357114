"""Integer matrix products: A @ B for two QTensors, as an accelerator computes them.

Scale structure decides the schedule (scales may vary along any axis a grouping put them on):
- A's scale varying along rows (pixel/token groups of a Linear input) or B's along columns
  (per-output-channel weights) factors out of the sum: per-row / per-column output scales.
- A scale varying along the reduction axis (channel groups) does not: the reduction is split into
  one integer accumulator per distinct (scale_A, scale_B) group, each rescaled, then added (split-K),
  groups in ascending (scale_A, scale_B) order.
- Scales that vary along batch axes (heads after a head split of channel-grouped q/k/v) are handled
  per batch pattern: batch elements with identical scales share one schedule.
- Log-coded A (attention probabilities) uses shift-and-add: sum_k (v_k << (S - q_k)) with the
  target's maximum shift S; terms with q_k > S vanish, as in hardware.
Masked (floating-point) rows of A / columns of B are computed in float32: the <start> branch.

How it runs: one permutation of the reduction axis makes every split-K group contiguous, and the
output is produced a block of rows at a time (about CHUNK_BYTES of working set). Within a block each
group's accumulator is computed, width-checked, rescaled and added before the next group, so the
rescale-sum runs in cache and no [groups, rows, cols] array is built. The integers, the epilogue
operations and their order are those of one accumulator per group over the whole output, so the
result is bit-identical to it.
"""
from __future__ import annotations

import numpy as np

from simulator.errors import Unsupported
from simulator.integer import (
    INT8_MAX_K,
    accumulate_dtype,
    accumulation_bound,
    exact_matmul,
    int8_engine,
    int8_matmul,
    int8_parts,
    run_blocks,
    serialised,
)
from simulator.qtensor import LOG, QTensor, varies
from simulator.shapes import broadcast_shape, numel

CHUNK_BYTES = 1 << 21  # working set of one block of output rows (about one core's L2 cache)
INT8_MIN_K = 64        # shorter reductions stay in float32 (exact, and too small to gain from int8)
SMALL_PRODUCT = 1 << 24  # multiply-adds below which blocks run in the calling thread


def quantized_matmul(a: QTensor, b: QTensor, accumulate, epilogue, max_shift: int = 0, alloc=np.empty):
    """-> (float32 result, number of accumulator groups). Raises Unsupported for layouts the
    integer schedule cannot take (the caller then runs the float path and says why).
    `alloc(shape, dtype)` provides the output buffer."""
    if a.ndim < 2 or b.ndim < 2:
        raise Unsupported("1-D operand")
    if b.kind == LOG:
        raise Unsupported("log-coded right operand")
    if a.mask is not None and varies(a.mask, -1):
        raise Unsupported("floating-point elements along the reduction axis of A")
    if b.mask is not None and varies(b.mask, -2):
        raise Unsupported("floating-point elements along the reduction axis of B")
    log = a.kind == LOG
    sa = a.scale.astype(np.float32)
    if log:  # the shift-add sum counts in units of 2^-S
        sa = (sa * np.float32(2.0 ** -max_shift)).astype(np.float32)
    sb = b.scale.astype(np.float32)
    if (varies(sa, -2) and varies(sa, -1)) or (varies(sb, -2) and varies(sb, -1)):
        raise Unsupported("scale varies along both the reduction axis and an output axis")
    batch = broadcast_shape(a.shape[:-2], b.shape[:-2])
    m, n = a.shape[-2], b.shape[-1]
    left = _Left(a, batch, max_shift, sa)
    b_ints = _as_3d(b.integers(), batch)
    sb3, b_max = _as_3d(sb, batch), b.operand_bound()
    size = left.codes.shape[0] if b_ints.shape[0] == 1 else b_ints.shape[0]
    y = alloc(batch + (m, n), np.float32)
    y3 = y.reshape(size, m, n)
    n_groups = 0
    accumulate = serialised(accumulate)
    for index, sa_i, sb_i in _batch_patterns(left.scale, sb3, size):
        n_groups = max(n_groups, _grouped(left, b_ints, b_max, index, sa_i, sb_i, y3, accumulate, epilogue, log))
    return _float_parts(y, a, b), n_groups


def _as_3d(arr: np.ndarray, batch: tuple) -> np.ndarray:
    """[..., X, Y] -> [1 or prod(batch), X, Y] (the batch axes merged; size 1 when constant)."""
    if all(d == 1 for d in arr.shape[:-2]):
        return arr.reshape((1,) + arr.shape[-2:])
    full = np.broadcast_to(arr, batch + arr.shape[-2:])
    return full.reshape((numel(batch),) + arr.shape[-2:])


def _pick(arr: np.ndarray, batch_sel, rows=slice(None)) -> np.ndarray:
    """arr[batch_sel, rows] along the axes where a broadcastable 3-D array is not of size 1."""
    return arr[batch_sel if arr.shape[0] > 1 else slice(None), rows if arr.shape[1] > 1 else slice(None)]


class _Left:
    """A as integers, produced a block of rows at a time (whole A can be ~10^8 log codes)."""

    def __init__(self, a: QTensor, batch: tuple, max_shift: int, scale: np.ndarray):
        self.codes = _as_3d(a.codes, batch)
        self.zero_point = _as_3d(a.zero_point, batch)
        self.mask = None if a.mask is None else _as_3d(a.mask, batch)
        self.scale = _as_3d(scale, batch)
        self.log, self.max_shift = a.kind == LOG, max_shift
        self.top = int(a.code_range[1])
        self.bound = (1 << max_shift) if self.log else a.operand_bound()
        self._tables: dict = {}

    def block(self, batch_sel, rows, perm, dtype) -> np.ndarray:
        codes = self.codes[batch_sel if self.codes.shape[0] > 1 else slice(None), rows]
        if perm is not None:
            codes = codes[..., perm]
        if self.log:
            # term of code q: 1 << (S - q), or 0 when q > S (shifted out): one table lookup per code
            # (powers of two are exact in any of the accumulation types)
            if dtype not in self._tables:
                self._tables[dtype] = np.array([(1 << (self.max_shift - c)) if c <= self.max_shift else 0
                                                for c in range(self.top + 1)], dtype)
            ints = np.take(self._tables[dtype], codes)
        else:
            zp = _pick(self.zero_point, batch_sel, rows)
            if perm is not None and zp.shape[-1] > 1:
                zp = zp[..., perm]
            ints = (codes.astype(np.int32) - zp).astype(dtype, copy=False)
        if self.mask is not None:
            mask = _pick(self.mask, batch_sel, rows)
            ints = np.where(mask[..., perm] if perm is not None and mask.shape[-1] > 1 else mask, 0, ints)
        return ints


def _batch_patterns(sa: np.ndarray, sb: np.ndarray, size: int):
    """Yield (batch indices, sa [1, M|1, K|1], sb [1, K|1, N|1]) for each set of batch elements
    whose scales are identical."""
    if sa.shape[0] == 1 and sb.shape[0] == 1:
        yield np.arange(size), sa, sb
        return
    patterns: dict[bytes, list[int]] = {}
    for i in range(size):
        key = sa[min(i, sa.shape[0] - 1)].tobytes() + b"|" + sb[min(i, sb.shape[0] - 1)].tobytes()
        patterns.setdefault(key, []).append(i)
    for index in patterns.values():
        yield np.array(index), sa[index[0]:index[0] + 1] if sa.shape[0] > 1 else sa, \
            sb[index[0]:index[0] + 1] if sb.shape[0] > 1 else sb


def _split_k_groups(sa: np.ndarray, sb: np.ndarray, k: int):
    """-> (permutation of K or None, [(start, stop) of each group in the permuted K]), groups in
    ascending (scale_A, scale_B) order; one group (no permutation) when neither scale varies along K."""
    a_k, b_k = sa.shape[-1] > 1 and varies(sa, -1), sb.shape[-2] > 1 and varies(sb, -2)
    if not (a_k or b_k):
        return None, [(0, k)]
    ka = np.broadcast_to(sa[0, 0], (k,)) if a_k else np.ones(k, np.float32)
    kb = np.broadcast_to(sb[0, :, 0], (k,)) if b_k else np.ones(k, np.float32)
    if np.all(ka >= 0) and np.all(kb >= 0) and not np.signbit(ka).any() and not np.signbit(kb).any():
        # non-negative float32 values order like their bit patterns: one uint64 key per (scale_A, scale_B)
        key = (ka.view(np.uint32).astype(np.uint64) << np.uint64(32)) | kb.view(np.uint32).astype(np.uint64)
        _, inverse = np.unique(key, return_inverse=True)
    else:
        _, inverse = np.unique(np.stack([ka, kb], 1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    perm = np.argsort(inverse, kind="stable")
    stops = np.cumsum(np.bincount(inverse))
    return perm, list(zip([0, *stops[:-1].tolist()], stops.tolist()))


def _group_scales(sa: np.ndarray, sb: np.ndarray, perm, groups) -> list:
    """Per group: (sa_g [1, M|1, 1], sb_g [1, 1, N|1]), taken at the group's first (permuted) K index."""
    a_k, b_k = sa.shape[-1] > 1 and varies(sa, -1), sb.shape[-2] > 1 and varies(sb, -2)
    sa = sa if a_k else sa[..., :1]          # constant along K: keep one column
    sb = sb if b_k else sb[..., :1, :]
    scales = []
    for lo, _ in groups:
        first = lo if perm is None else int(perm[lo])
        scales.append((sa[..., first:first + 1] if a_k else sa, sb[..., first:first + 1, :] if b_k else sb))
    return scales


def _grouped(left: _Left, b_ints, b_max, index, sa, sb, y, accumulate, epilogue, log: bool) -> int:
    """y[index] = A[index] @ B[index] for batch elements sharing one scale pattern."""
    k = left.codes.shape[-1]
    m, n = y.shape[-2:]
    perm, groups = _split_k_groups(sa, sb, k)
    scales = _group_scales(sa, sb, perm, groups)
    k_max = max(hi - lo for lo, hi in groups)
    dtype = accumulate_dtype(k_max, left.bound, b_max)
    shared_b = b_ints.shape[0] == 1
    bi = b_ints if shared_b else b_ints[index]
    bi = bi if perm is None else bi[:, perm]
    # weights with a long reduction: int8 dot products (exact integer accumulators) where available
    b_parts = int8_parts(bi[0]) if (shared_b and not log and INT8_MIN_K <= k_max <= INT8_MAX_K
                                    and int8_engine()) else None
    exact_dtype = dtype
    if b_parts is not None:
        dtype = np.int32  # A blocks as integers, split into int8 parts per block
    bi = bi.astype(dtype, copy=False)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = k * itemsize + n * (itemsize + 12)     # A row + accumulator, rescaled part and sum
    rows = max(1, CHUNK_BYTES // row_bytes)
    b_step, r_step = (max(1, rows // m), m) if rows >= m else (1, rows)

    def block(b0: int, r0: int) -> None:
        sel = index[b0:b0 + b_step]
        b_blk = bi if shared_b else bi[b0:b0 + b_step]
        r_sel = slice(r0, min(m, r0 + r_step))
        a_blk = left.block(sel, r_sel, perm, dtype)
        a_parts = int8_parts(a_blk.reshape(-1, k)) if b_parts is not None else None

        def product(lo, hi):
            if a_parts is None:
                return exact_matmul(a_blk[..., lo:hi].astype(exact_dtype, copy=False),
                                    b_blk[..., lo:hi, :].astype(exact_dtype, copy=False))
            acc = int8_matmul([(f, p[:, lo:hi]) for f, p in a_parts], [(f, p[lo:hi]) for f, p in b_parts])
            return acc.reshape(a_blk.shape[:-1] + (n,))

        def terms():  # one accumulator at a time: rescaled and added before the next is computed
            for (lo, hi), (sa_g, sb_g) in zip(groups, scales):
                acc = product(lo, hi)
                scale = (_pick(sa_g, slice(None), r_sel) * sb_g).astype(np.float32)
                yield accumulate(acc, log, accumulation_bound(hi - lo, left.bound, b_max)), scale
        y[sel, r_sel] = epilogue.rescale_sum(terms())
    jobs = [(b0, r0) for b0 in range(0, len(index), b_step) for r0 in range(0, m, r_step)]
    if len(index) * m * n * k < SMALL_PRODUCT:  # too small to be worth handing to worker threads
        for job in jobs:
            block(*job)
    else:
        run_blocks(jobs, block)
    return len(groups)


def _float_parts(y, a: QTensor, b: QTensor):
    """Rows of A / columns of B that are floating point (the <start> branch) in float32."""
    if a.mask is None and b.mask is None:
        return y
    a_f, b_f = a.dequantize(), b.dequantize()
    if a.mask is not None:
        rows = np.nonzero(np.broadcast_to(a.mask, a.shape).reshape(-1, a.shape[-2], a.shape[-1]).any(axis=(0, 2)))[0]
        part = np.matmul(a_f[..., rows, :], b_f).astype(np.float32)
        sel = np.broadcast_to(a.mask, a.shape)[..., rows, :1]
        y[..., rows, :] = np.where(sel, part, y[..., rows, :])
    if b.mask is not None:
        cols = np.nonzero(np.broadcast_to(b.mask, b.shape).reshape(-1, b.shape[-2], b.shape[-1]).any(axis=(0, 1)))[0]
        part = np.matmul(a_f, b_f[..., :, cols]).astype(np.float32)
        sel = np.broadcast_to(b.mask, b.shape)[..., :1, cols]
        y[..., :, cols] = np.where(sel, part, y[..., :, cols])
    return y
