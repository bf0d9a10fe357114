"""Integer matrix products: A @ B for two QTensors, as an accelerator computes them.

Scale structure decides the schedule (scales may vary along any axis a grouping put them on):
- A's scale varying along rows (pixel/token groups of a Linear input) or B's along columns
  (per-output-channel weights) factors out of the sum: per-row / per-column output scales.
- A scale varying along the reduction axis (channel groups) does not: the reduction is split into
  one integer accumulator per distinct (scale_A, scale_B) group, each rescaled, then added (split-K).
- Scales that vary along batch axes (heads after a head split of channel-grouped q/k/v) are handled
  per batch element.
- Log-coded A (attention probabilities) uses shift-and-add: sum_k (v_k << (S - q_k)) with the
  target's maximum shift S; terms with q_k > S vanish, as in hardware.
Masked (floating-point) rows of A / columns of B are computed in float32: the <start> branch.
"""
from __future__ import annotations

import numpy as np

from simulator.executor import Unsupported
from simulator.integer import accumulation_bound, int_matmul
from simulator.qtensor import LOG, QTensor, varies


def _operand(q: QTensor, max_shift: int):
    """(integer operand, bound on |operand|, scale) for one side of the product."""
    if q.kind == LOG:
        # term of code q: 1 << (S - q), or 0 when q > S (shifted out); one table lookup per code
        top = int(q.code_range[1])
        table = np.array([float(1 << (max_shift - c)) if c <= max_shift else 0.0 for c in range(top + 1)])
        ints = np.take(table.astype(np.float64 if max_shift >= 24 else np.float32), q.codes)
        scale = (q.scale.astype(np.float32) * np.float32(2.0 ** -max_shift)).astype(np.float32)
        return ints, 1 << max_shift, scale
    return q.integers(), q.operand_bound(), q.scale.astype(np.float32)


def _batch_varying(scale: np.ndarray) -> bool:
    return any(varies(scale, ax) for ax in range(scale.ndim - 2))


def _grouped(ai, a_max, sa, bi, b_max, sb, accumulate, epilogue, log: bool):
    """The 2-D/batched core: scales constant along batch axes."""
    a_k, b_k = varies(sa, -1), varies(sb, -2)
    sa = sa if a_k else sa[..., :1]          # constant along K: keep one column
    sb = sb if b_k else sb[..., :1, :]
    k = ai.shape[-1]
    if a_k or b_k:
        ka = np.broadcast_to(sa.reshape(-1, sa.shape[-1])[0], (k,)) if a_k else np.ones(k, np.float32)
        kb = np.broadcast_to(np.moveaxis(sb, -2, -1).reshape(-1, sb.shape[-2])[0], (k,)) if b_k else np.ones(k, np.float32)
        _, inverse = np.unique(np.stack([ka, kb], 1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        groups = [np.nonzero(inverse == g)[0] for g in range(inverse.max() + 1)]
    else:
        groups = [None]
    def terms():  # one accumulator at a time: rescaled and added before the next is computed
        for idx in groups:
            if idx is None:
                acc = int_matmul(ai, bi, a_max, b_max)
                first, k_g = 0, k
            else:
                acc = int_matmul(ai[..., idx], bi[..., idx, :], a_max, b_max)
                first, k_g = int(idx[0]), len(idx)
            sa_g = sa[..., first:first + 1] if a_k else sa
            sb_g = sb[..., first:first + 1, :] if b_k else sb
            yield accumulate(acc, log, accumulation_bound(k_g, a_max, b_max)), (sa_g * sb_g).astype(np.float32)

    return epilogue.rescale_sum(terms()), len(groups)


CHUNK_ELEMENTS = 1 << 24  # results larger than this are computed a batch slice at a time (memory)


def quantized_matmul(a: QTensor, b: QTensor, accumulate, epilogue, max_shift: int = 0):
    """-> (float32 result, number of accumulator groups). Raises Unsupported for layouts the
    integer schedule cannot take (the caller then runs the float path and says why)."""
    if a.ndim < 2 or b.ndim < 2:
        raise Unsupported("1-D operand")
    cols = b.shape[-1]
    if a.ndim >= 3 and a.shape[0] > 1 and a.codes.size // a.shape[-1] * cols > CHUNK_ELEMENTS:
        n = a.shape[0]
        step = max(1, CHUNK_ELEMENTS // max(1, a.codes.size // n // a.shape[-1] * cols))
        parts, groups = [], 0
        for start in range(0, n, step):
            index = (slice(start, min(n, start + step)),)
            a_part = a.slice(index + (slice(None),) * (a.ndim - 1))
            b_part = b if b.ndim < a.ndim or b.shape[0] == 1 else b.slice(index + (slice(None),) * (b.ndim - 1))
            if a_part is None or b_part is None:
                raise Unsupported("a batch slice is entirely floating point")
            y, g = _quantized_matmul(a_part, b_part, accumulate, epilogue, max_shift)
            parts.append(y)
            groups = max(groups, g)
        return np.concatenate(parts, axis=0), groups
    return _quantized_matmul(a, b, accumulate, epilogue, max_shift)


def _quantized_matmul(a: QTensor, b: QTensor, accumulate, epilogue, max_shift: int):
    if b.kind == LOG:
        raise Unsupported("log-coded right operand")
    if a.mask is not None and any(varies(a.mask, ax) for ax in (-1,)):
        raise Unsupported("floating-point elements along the reduction axis of A")
    if b.mask is not None and varies(b.mask, -2):
        raise Unsupported("floating-point elements along the reduction axis of B")
    ai, a_max, sa = _operand(a, max_shift)
    bi, b_max, sb = b.integers(), b.operand_bound(), b.scale.astype(np.float32)
    if (varies(sa, -2) and varies(sa, -1)) or (varies(sb, -2) and varies(sb, -1)):
        raise Unsupported("scale varies along both the reduction axis and an output axis")
    log = a.kind == LOG
    if _batch_varying(sa) or _batch_varying(sb):
        batch = np.broadcast_shapes(ai.shape[:-2], bi.shape[:-2])
        out = None
        n_groups = 0
        for index in np.ndindex(*batch):
            def pick(arr):
                off = len(batch) - (arr.ndim - 2)
                return arr[tuple(0 if arr.shape[d] == 1 else index[d + off] for d in range(arr.ndim - 2))]
            y, g = _grouped(pick(ai), a_max, pick(np.broadcast_to(sa, sa.shape)), pick(bi), b_max,
                            pick(np.broadcast_to(sb, sb.shape)), accumulate, epilogue, log)
            if out is None:
                out = np.empty(batch + y.shape, np.float32)
            out[index] = y
            n_groups = max(n_groups, g)
        y = out
    else:
        y, n_groups = _grouped(ai, a_max, sa, bi, b_max, sb, accumulate, epilogue, log)
    y = _float_parts(y, a, b)
    return y, n_groups


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
