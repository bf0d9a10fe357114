"""The attention tap of the statistics observer: q, k, v and the probabilities, attention run in slices.

A mixin of StatsObserver (observer.py), which provides `_observe` (one tensor, the call plan) and
`_observe_probs` (the probabilities' partials assembled from slices).
"""
from __future__ import annotations

import torch

from dgq_compiler.calibrate.fills import numel
from dgq_compiler.calibrate.reference_stats import Partial

SLICE_BYTES = 1 << 20         # scores + probs of one attention slice: stays in a core's L2 cache (speed only)


class AttentionStats:
    _slice_rows: int
    _slice_max = None
    _slice_parts: dict
    _bos = None

    def qkv(self, name, role, tensor, cross):
        self._observe(name, role, tensor, cross)
        return tensor

    def attend(self, name, probs, value, cross):
        self._observe(name, "attn_probs", probs, cross)
        return torch.bmm(probs, value)

    def attend_rows(self, name, cross, shape) -> int | None:
        """Attention runs in slices of batch*heads whose scores + probs fit SLICE_BYTES (faster: they stay in
        cache; and the whole [B*heads, Nq, Nk] probs of a self-attention never exist at once). key_max is a
        max: it folds over slices exactly; bos_mass is a mean: see `attend_slice`."""
        return max(1, SLICE_BYTES // (8 * shape[1] * shape[2]))

    def attend_slice(self, name, probs, value, cross, start, total, out):
        shape, rows = (total, *probs.shape[1:]), probs.shape[0]
        if start == 0:  # one row per slice: its max per key column (over queries; max is exact)
            self._slice_rows, slices = rows, -(-total // rows)
            key = (slices, shape[2], probs.dtype)
            if key not in self._slice_parts:
                self._slice_parts[key] = torch.empty(slices, shape[2], dtype=probs.dtype, device=probs.device)
            self._slice_max = self._slice_parts[key]
        torch.amax(probs, dim=(0, 1), out=self._slice_max[start // self._slice_rows])
        if cross:  # the <start> column goes where it would lie in the whole probs tensor, see `_bos_column`
            self._bos_column(shape, probs)[start:start + rows].copy_(probs[..., 0])
        if start + rows == total:
            parts = [Partial("key_max", None, self._slice_max.amax(dim=0))]
            if cross:  # the mean of a view with the whole tensor's sizes and strides: the same reduction, same bits
                mass = self._bos_column(shape, probs).mean().reshape(1)
                parts.append(Partial("bos_mass", mass, mass))
            self._observe_probs(name, shape, probs.dtype, cross, parts)
            self._slice_max = None
        torch.bmm(probs, value, out=out)

    def _bos_column(self, shape, like):
        """A [B*heads, Nq] view laid out as column 0 of a contiguous [B*heads, Nq, Nk] tensor."""
        size = numel(shape)
        if self._bos is None or self._bos.numel() < size or self._bos.dtype != like.dtype:
            self._bos = torch.empty(size, dtype=like.dtype, device=like.device)
        return self._bos.as_strided(shape[:2], (shape[1] * shape[2], shape[2]))
