"""Pixel groups on a kxk convolution, lowered per kernel tap (a helper of lower_conv).

An input pixel's scale does not factor out of a kxk patch, but it does factor out of one tap: for tap (i, j) every
output pixel o reads exactly one input pixel p(o, t), so that tap's product is a 1x1 product with per-row scales
s[p(o, t)] and per-row zero points z[p(o, t)]. So

    y[o] = sum_t s[p(o, t)] * sw * acc_t[o],   acc_t[o] = sum_c (a[p(o, t), c] - z[p(o, t)]) (w_t[c] - zw)

with kh*kw integer products of K = C (+ the zero-point rows of lower_common.zero_point_rows) instead of one full
convolution per pixel group: the multiply-adds of one convolution, not G of them. The simulator's accumulator of
group g is the exact integer sum of the tap accumulators whose pixel is in g (acc_g[o] = sum over taps t with
group(p(o, t)) = g of acc_t[o]); `dgq verify` forms those sums from the graph's tap accumulators and compares.
Padding: codes, zero points and scales are padded with 0, so a padded tap adds (0 - 0) * w = 0.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import add_node, constant
from passes.lower_common import (
    INT64_MAX,
    add_all,
    integer_product,
    rescale,
    zero_point_rows,
)


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def pixel_groups_by_tap(graph: gs.Graph, codes: gs.Tensor, z_pix: gs.Tensor, s_pix: gs.Tensor, x: gs.Tensor,
                        w4: np.ndarray, zw: np.ndarray, w_zero: gs.Tensor, w_scale: np.ndarray, one: gs.Tensor,
                        kernel, strides, pads, dilations, prefix: str, meta, metadata: dict) -> gs.Tensor:
    """codes: uint8 NHWC [B, H, W, C] (per-pixel grid); z_pix, s_pix: per-pixel zero points / scales [H*W];
    w4: int8 [taps, C, Co], w_scale: float32 [Co] -> float NHWC output [B, Ho, Wo, Co] without bias. `meta(t)` -> the
    product metadata."""
    kh, kw = kernel
    top, left, bottom, right = pads
    shape = add_node(graph, "Shape", f"{prefix}/x_shape", [x], dtype=np.int64)
    hw = add_node(graph, "Slice", f"{prefix}/x_hw", [shape, constant(f"{prefix}/hw_s", _i64([2])),
                                                     constant(f"{prefix}/hw_e", _i64([4]))], dtype=np.int64)
    map_shape = add_node(graph, "Concat", f"{prefix}/map_shape", [constant(f"{prefix}/one_dim", _i64([1])), hw,
                                                                   constant(f"{prefix}/one_dim_", _i64([1]))],
                         dtype=np.int64, attrs={"axis": 0})
    pad_spec = constant(f"{prefix}/pads", _i64([0, top, left, 0, 0, bottom, right, 0]))

    def padded(t, name, dtype, zero):
        if any(pads):
            return add_node(graph, "Pad", f"{prefix}/{name}/Pad", [t, pad_spec, zero], dtype=dtype)
        return t
    codes_p = padded(codes, "codes", np.uint8, constant(f"{prefix}/pad_code", np.array(0, np.uint8)))
    z_map = add_node(graph, "Reshape", f"{prefix}/z_map", [z_pix, map_shape], dtype=np.uint8)
    s_map = add_node(graph, "Reshape", f"{prefix}/s_map", [s_pix, map_shape])
    z_p = padded(z_map, "z_map", np.uint8, constant(f"{prefix}/pad_zero", np.array(0, np.uint8)))
    s_p = padded(s_map, "s_map", np.float32, constant(f"{prefix}/pad_scale", np.array(0.0, np.float32)))
    # the zero-point columns are appended once, to the padded codes; every tap slices codes and columns together.
    # Taps needing fewer correction rows than the widest get rows equal to the weight zero points (they add 0).
    rows = [zero_point_rows(w4[t], zw) for t in range(kh * kw)]
    r = max(d.shape[0] for d in rows)
    filler = np.broadcast_to(zw.astype(np.int8)[None, :], (r, zw.shape[0]))
    rows = [np.concatenate([d, filler[: r - d.shape[0]]]) for d in rows]
    codes_shape = add_node(graph, "Shape", f"{prefix}/codes_shape", [codes_p], dtype=np.int64,
                           attrs={"start": 0, "end": 3})
    z_shape = add_node(graph, "Concat", f"{prefix}/z_shape", [codes_shape, constant(f"{prefix}/r", _i64([r]))],
                       dtype=np.int64, attrs={"axis": 0})
    z_cols = add_node(graph, "Expand", f"{prefix}/z_cols", [z_p, z_shape], dtype=np.uint8)
    wide = add_node(graph, "Concat", f"{prefix}/with_zero_points", [codes_p, z_cols], dtype=np.uint8,
                    attrs={"axis": -1})
    axes, steps = constant(f"{prefix}/axes", _i64([1, 2])), constant(f"{prefix}/steps", _i64(list(strides)))
    a_zero = constant(f"{prefix}/a_zero", np.array(0, np.uint8))
    outs = []
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        start = constant(f"{prefix}/start{t}", _i64([i * dilations[0], j * dilations[1]]))
        back = [dilations[0] * (kh - 1 - i), dilations[1] * (kw - 1 - j)]
        end = constant(f"{prefix}/end{t}", _i64([-b if b else INT64_MAX for b in back]))
        cols = add_node(graph, "Slice", f"{prefix}/tap{t}", [wide, start, end, axes, steps], dtype=np.uint8)
        s_t = add_node(graph, "Slice", f"{prefix}/tap{t}/s", [s_p, start, end, axes, steps])
        acc = integer_product(graph, cols, constant(f"{prefix}/w{t}", np.concatenate([w4[t], rows[t]])), a_zero,
                              w_zero, f"{prefix}/acc{t}", meta(t), metadata)
        # onnxruntime merges equal initializers and equal nodes: one Mul(one, w_scale) read by every tap's rescale,
        # which then fuses into none of the integer GEMMs. So tap t gets its own weight scale w_scale * 2^t, and its
        # row scales carry the 2^-t back: powers of two move no rounding, the result is the same to the bit.
        shifted_scale = constant(f"{prefix}/w_scale{t}", (w_scale * np.float32(2.0 ** t)).astype(np.float32))
        y = rescale(graph, acc, one, shifted_scale, f"{prefix}/rescale{t}")
        if t:
            s_t = add_node(graph, "Mul", f"{prefix}/tap{t}/s_unshift",
                           [s_t, constant(f"{prefix}/tap{t}/unshift", np.array(2.0 ** -t, np.float32))])
        outs.append(add_node(graph, "Mul", f"{prefix}/tap{t}/rows", [y, s_t]))
    return add_all(graph, outs, f"{prefix}/sum")
