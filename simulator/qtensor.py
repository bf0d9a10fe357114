"""Integer codes travelling with their quantization parameters through layout-only ops.

A QTensor is what a DequantizeLinear (or dgq.DequantizeLog) output *is* on integer hardware:
codes plus a scale and zero point per element. Scales and zero points are stored broadcastable
(same ndim as the codes, size-1 where they do not vary), so Transpose/Slice/Reshape/Concat can be
applied to them alongside the codes and the integer ops can tell channel groups (scale varies along
the reduction axis -> split-K) from pixel/token groups (varies along an output axis -> per-row scales).

`mask` (optional, broadcastable bool) marks elements that are NOT quantized (the cross-attention
<start> row concatenated back in floating point); `values` then holds the float tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

LINEAR, LOG = "linear", "log"


@dataclass(frozen=True)
class QTensor:
    codes: np.ndarray                 # integer codes (storage dtype: uint8/int8/int16/...; int4 widened to int8)
    scale: np.ndarray                 # float32, broadcastable to codes
    zero_point: np.ndarray            # int32, broadcastable to codes (0 for log codes)
    kind: str = LINEAR                # linear: x = s (q - z); log: x = s 2^-q
    code_range: tuple[int, int] = (0, 255)   # storage grid [lo, hi] of the codes (bounds |q - z|)
    mask: np.ndarray | None = None    # True where the element is floating point (not quantized)
    values: np.ndarray | None = None  # float tensor, required when mask is set

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape

    @property
    def ndim(self) -> int:
        return self.codes.ndim

    def operand_bound(self) -> int:
        """Largest |q - z| the storage grid allows (from bit widths, not from data)."""
        lo, hi = self.code_range
        if self.kind == LOG:
            return hi
        return hi - lo

    def integers(self) -> np.ndarray:
        """q - z as int32 (exact), zero where the element is floating point."""
        centred = self.codes.astype(np.int32) - self.zero_point.astype(np.int32)
        if self.mask is not None:
            centred = np.where(self.mask, 0, centred)
        return centred

    def dequantize(self) -> np.ndarray:
        """The float32 tensor this stands for (bit-identical to DequantizeLinear / DequantizeLog)."""
        if self.mask is not None:
            return self.values
        if self.kind == LOG:
            return (self.scale * np.ldexp(np.float32(1), -self.codes.astype(np.int32))).astype(np.float32)
        return ((self.codes.astype(np.int32) - self.zero_point).astype(np.float32) * self.scale).astype(np.float32)

    # ---- layout-only transforms ------------------------------------------------------------
    def _map(self, fn_full, fn_param) -> "QTensor":
        return replace(self, codes=fn_full(self.codes), scale=fn_param(self.scale),
                       zero_point=fn_param(self.zero_point),
                       mask=None if self.mask is None else fn_param(self.mask),
                       values=None if self.values is None else fn_full(self.values))

    def transpose(self, perm) -> "QTensor":
        return self._map(lambda a: np.transpose(a, perm), lambda a: np.transpose(a, perm))

    def reshape(self, shape) -> "QTensor":
        shape = tuple(int(d) for d in shape)
        src = self.codes.shape

        def param(a):
            if a.size == 1:
                return a.reshape((1,) * len(shape))
            return compress(np.broadcast_to(a, src).reshape(shape))
        return self._map(lambda a: a.reshape(shape), param)

    def slice(self, index: tuple) -> "QTensor":
        """`index`: a tuple of slices, one per axis."""
        full = self.codes.shape

        def param(a):
            idx = tuple(sl if a.shape[i] == full[i] else slice(None) for i, sl in enumerate(index))
            return a[idx]
        out = self._map(lambda a: a[index], param)
        return out.simplify_mask()

    def simplify_mask(self) -> "QTensor | None":
        """Drop an all-False mask; None when every element is floating point."""
        if self.mask is None:
            return self
        if not self.mask.any():
            return replace(self, mask=None, values=None)
        if self.mask.all():
            return None
        return self


def compress(a: np.ndarray) -> np.ndarray:
    """Collapse every axis `a` is constant along to size 1 (keeps ndim)."""
    a = np.ascontiguousarray(a)
    for axis in range(a.ndim):
        if a.shape[axis] > 1:
            first = np.take(a, [0], axis=axis)
            if np.array_equal(a, np.broadcast_to(first, a.shape)):
                a = first
    return a


def varies(a: np.ndarray, axis: int) -> bool:
    """Whether a broadcastable parameter array changes along `axis`."""
    axis = axis % a.ndim
    if a.shape[axis] == 1:
        return False
    first = np.take(a, [0], axis=axis)
    return not np.array_equal(a, np.broadcast_to(first, a.shape))


def concat(parts: list, axis: int) -> QTensor:
    """Concatenate QTensors and float arrays (float parts become masked elements)."""
    codes_parts, scale_parts, zp_parts, mask_parts, value_parts = [], [], [], [], []
    template = next(p for p in parts if isinstance(p, QTensor))
    any_float = any(not isinstance(p, QTensor) or p.mask is not None for p in parts)
    for p in parts:
        if isinstance(p, QTensor):
            shape = p.shape
            codes_parts.append(p.codes)
            scale_parts.append(np.broadcast_to(p.scale, shape))
            zp_parts.append(np.broadcast_to(p.zero_point, shape))
            mask_parts.append(np.zeros(shape, bool) if p.mask is None else np.broadcast_to(p.mask, shape))
            if any_float:
                value_parts.append(p.dequantize())
        else:
            # a float part borrows the first quantized part's parameters (first index along the concat
            # axis), so its placeholder scales do not look like a grouping along that axis
            shape = p.shape
            like = np.take(np.broadcast_to(template.scale, template.shape), [0], axis=axis)
            like_z = np.take(np.broadcast_to(template.zero_point, template.shape), [0], axis=axis)
            codes_parts.append(np.zeros(shape, template.codes.dtype))
            scale_parts.append(np.broadcast_to(like, shape))
            zp_parts.append(np.broadcast_to(like_z, shape))
            mask_parts.append(np.ones(shape, bool))
            value_parts.append(p.astype(np.float32))
    if any(isinstance(p, QTensor) and p.kind != template.kind for p in parts):
        raise ValueError("cannot concatenate linear and log codes")
    mask = compress(np.concatenate(mask_parts, axis=axis)) if any_float else None
    return QTensor(codes=np.concatenate(codes_parts, axis=axis),
                   scale=compress(np.concatenate(scale_parts, axis=axis)).astype(np.float32),
                   zero_point=compress(np.concatenate(zp_parts, axis=axis)).astype(np.int32),
                   kind=template.kind, code_range=template.code_range, mask=mask,
                   values=np.concatenate(value_parts, axis=axis) if any_float else None)
