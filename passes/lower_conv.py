"""Lower every quantized Conv (integer weights, group = 1) to im2col on uint8 codes + MatMulInteger, in NHWC.

Codes are made in NCHW (QuantizeLinear on the float input, as the QDQ graph does), transposed to NHWC as
uint8, patched (lower_common.im2col_nhwc: Pad with the zero point, one Slice per tap, Concat; a 1x1 stride-1
conv needs none) and multiplied by the weights as a [kh*kw*C, C_out] matrix; the float result goes back to
NCHW. Per grouping (the simulator's schedules, DESIGN.md section 6):
- tensor: one product with the step's zero point, rescaled by s_t * sw (+ bias);
- pixel groups on a 1x1 stride-1 conv: each output pixel reads one input pixel, so per-row scales of one
  product (per-row zero points inside it, as in lower_linear);
- channel groups (split-K): codes permuted so each group's channels are contiguous, patched, and multiplied by
  the group's weight rows in ONE batched product [B, G, Ho*Wo, taps*K/G (+ pad, + zero-point slots)], each
  group's slice rescaled and summed over G (passes/lower_batched.py);
- pixel groups on a kxk conv: an input pixel's scale does not factor out of a patch, but it does out of one
  kernel tap: kh*kw products with per-row scales, one per tap (lower_conv_taps), the multiply-adds of one
  convolution; the simulator's per-group accumulators are exact sums of the tap accumulators.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant, step_index_tensor
from passes.errors import PassError
from passes.lower_common import (
    correction_count,
    add_report_row,
    scalar_step,
    ones_scale,
    product_meta,
    lowered_prefix,
    lowerable_nodes,
    add_all,
    group_layout,
    group_scalars,
    input_record,
    im2col_nhwc,
    integer_product,
    per_index_params,
    pixel_resample,
    quantize_codes,
    rescale,
    split_groups,
    step_row,
    weight_tensor,
    with_zero_point_columns,
    zero_point_rows,
)
from passes.lower_batched import (MAX_BATCH_INFLATION, batch_inflation, batched_product, correction_rows_of,
                                  group_column_sums, padded_group_layout, with_zero_rows)
from passes.lower_conv_taps import pixel_groups_by_tap

NCHW_TO_NHWC, NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def conv_attrs(node: gs.Node, kernel) -> tuple:
    a = node.attrs
    if a.get("group", 1) != 1:
        raise PassError(f"Conv {node.name!r}: grouped convolutions (group {a.get('group')}) cannot be lowered")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise PassError(f"Conv {node.name!r}: auto_pad is not supported by the lowering (explicit pads only)")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    return (tuple(kernel), tuple(a.get("strides", [1, 1])), (pads[0], pads[1], pads[2], pads[3]),
            tuple(a.get("dilations", [1, 1])))


def channel_groups(graph: gs.Graph, x: gs.Tensor, tq, w4: np.ndarray, wt, step: gs.Tensor, kernel, strides, pads,
                   dilations, name: str, prefix: str, module: str, metadata: dict, max_inflation: float):
    """Channel groups as one batched product (passes/lower_batched.py) -> (NHWC float output, kernel, G).

    The float input is zero-padded before it is quantized: a padded pixel's code is then its channel's zero
    point (round(0 / s) + z = z), so a padded tap adds (z_g - z_g) * w = 0 in every group, as the simulator's
    zero-padded convolution does. Codes [B, C, H, W] + G zero-point channels -> the step's slots [B, G*Kc, H, W]
    (Kc = Kp + r' zero-point slots, r' = ceil(r / taps): im2col repeats them per tap) -> [B*G, H, W, Kc] ->
    patches [B*G, Ho, Wo, taps*Kc] -> [B, G, Ho*Wo, taps*Kc] against weights [G, taps*Kc, Co]."""
    g_count, (taps, _, co) = tq.scale.shape[1], w4.shape
    top, left, bottom, right = pads
    s, z, scale_g, zero_g = per_index_params(tq, step, graph, prefix, group_rows=True)
    _, perms_w, kp = padded_group_layout(tq.group_map, g_count)
    w_padded, sums = group_column_sums(w4, wt.zero_point, perms_w, g_count, kp)
    r_tap = -(-correction_count(sums, wt.zero_point) // taps)
    if batch_inflation(g_count, kp + r_tap, w4.shape[1]) > max_inflation:
        return split_k(graph, x, tq, s, z, w_padded, wt, step, kernel, strides, pads, dilations, name, prefix, module,
                       metadata)
    padded = x
    if any(pads):
        padded = add_node(graph, "Pad", f"{prefix}/pad_input", [x, constant(f"{prefix}/input_pads", _i64(
            [0, 0, top, left, 0, 0, bottom, right])), constant(f"{prefix}/pad_zero", np.array(0.0, np.float32))])
    codes = quantize_codes(graph, padded, s, z, tq.bits, -3, prefix, metadata, input_record(module, tq))
    perms, _, _ = padded_group_layout(tq.group_map, g_count, r_tap)
    kc = kp + r_tap
    codes = with_zero_rows(graph, codes, zero_g, 1, 4, g_count, prefix)
    grouped = add_node(graph, "Gather", f"{prefix}/permute", [codes, step_row(graph, perms, step, f"{prefix}/perm",
                                                                              [-1], np.int32)],
                       dtype=np.uint8, attrs={"axis": 1})                                  # [B, G*Kc, H, W]
    grouped = add_node(graph, "Reshape", f"{prefix}/groups", [grouped, constant(f"{prefix}/groups_shape",
                                                                                _i64([-1, kc, 0, 0]))], dtype=np.uint8)
    grouped = add_node(graph, "Transpose", f"{prefix}/groups_nhwc", [grouped], dtype=np.uint8,
                       attrs={"perm": NCHW_TO_NHWC})                                      # [B*G, H, W, Kc]
    cols = im2col_nhwc(graph, grouped, None, kernel, strides, (0, 0, 0, 0), dilations, f"{prefix}/im2col")
    batch = add_node(graph, "Shape", f"{prefix}/batch", [x], dtype=np.int64, attrs={"end": 1})
    out_shape = add_node(graph, "Concat", f"{prefix}/out_shape", [
        batch, add_node(graph, "Shape", f"{prefix}/cols_hw", [cols], dtype=np.int64, attrs={"start": 1, "end": 3}),
        constant(f"{prefix}/co", _i64([co]))], dtype=np.int64, attrs={"axis": 0})
    rows_shape = add_node(graph, "Concat", f"{prefix}/rows_shape", [
        batch, constant(f"{prefix}/rows_dims", _i64([g_count, -1, taps * kc]))], dtype=np.int64, attrs={"axis": 0})
    a = add_node(graph, "Reshape", f"{prefix}/rows", [cols, rows_shape], dtype=np.uint8)  # [B, G, Ho*Wo, taps*Kc]
    w_rows = add_node(graph, "Gather", f"{prefix}/permute_w", [
        weight_tensor(graph, f"{prefix}/w", w_padded), step_row(graph, perms_w, step, f"{prefix}/perm_w", [-1],
                                                                np.int32)], dtype=np.int8, attrs={"axis": 1})
    w_rows = add_node(graph, "Reshape", f"{prefix}/w_taps", [w_rows, constant(f"{prefix}/w_taps_shape",
                                                                               _i64([taps, g_count, kp, co]))],
                      dtype=np.int8)
    w_rows = add_node(graph, "Transpose", f"{prefix}/w_group_major", [w_rows], dtype=np.int8,
                      attrs={"perm": [1, 0, 2, 3]})                                        # [G, taps, Kp, Co]
    corr = correction_rows_of(graph, w_rows, wt.zero_point, taps * kp, taps * r_tap, [1, 2], prefix)
    corr = add_node(graph, "Reshape", f"{prefix}/correction/per_tap", [corr, constant(
        f"{prefix}/correction/per_tap_shape", _i64([g_count, taps, r_tap, co]))], dtype=np.int8)  # [G, taps, r', Co]
    w_g = add_node(graph, "Concat", f"{prefix}/w_with_correction", [w_rows, corr], dtype=np.int8, attrs={"axis": 2})
    w_g = add_node(graph, "Reshape", f"{prefix}/w_groups", [w_g, constant(f"{prefix}/w_groups_shape",
                                                                           _i64([g_count, taps * kc, co]))],
                   dtype=np.int8)
    kernel_name = f"{name}, batched split-K x{g_count}"
    total = batched_product(graph, a, w_g, wt.zero_point, scale_g, wt.scale, g_count, 1, prefix,
                            product_meta(module, x, kernel_name, -1, "nhwc"), metadata)
    return add_node(graph, "Reshape", f"{prefix}/to_nhwc", [total, out_shape]), kernel_name, g_count


def split_k(graph: gs.Graph, x: gs.Tensor, tq, s: gs.Tensor, z: gs.Tensor, w_padded: np.ndarray, wt,
            step: gs.Tensor, kernel, strides, pads, dilations, name: str, prefix: str, module: str, metadata: dict):
    """Channel groups as one product per group: codes permuted so each group's channels are contiguous, split at the
    step's group sizes, patched per group (padded with the group's zero point) -> (NHWC float output, kernel, G).
    `w_padded` [taps, C + 1, Co]: the weights and a row of weight zero points (w - zw = 0) that padding slots read
    (lower_batched.group_column_sums)."""
    co = w_padded.shape[2]
    w_zero = constant(f"{prefix}/w_zero_point", wt.zero_point.astype(np.int8))
    w_scale = constant(f"{prefix}/w_scale", wt.scale.astype(np.float32))

    def nhwc(t):
        return add_node(graph, "Transpose", f"{t.name}/to_nhwc", [t], dtype=np.uint8, attrs={"perm": NCHW_TO_NHWC})

    g_count = tq.scale.shape[1]
    codes = quantize_codes(graph, x, s, z, tq.bits, -3, prefix, metadata, input_record(module, tq))
    perms, perms_w, sizes = group_layout(tq)
    perm = step_row(graph, perms, step, f"{prefix}/perm", [-1], np.int64)
    perm_w = step_row(graph, perms_w, step, f"{prefix}/perm_w", [-1], np.int64)
    size = step_row(graph, sizes, step, f"{prefix}/sizes", [-1], np.int64)
    # permuted and split in NCHW (Gather copies whole H*W planes), each group then transposed to NHWC
    grouped = add_node(graph, "Gather", f"{prefix}/permute", [codes, perm], dtype=np.uint8, attrs={"axis": 1})
    w_all = weight_tensor(graph, f"{prefix}/w", w_padded)
    w_perm = add_node(graph, "Gather", f"{prefix}/permute_w", [w_all, perm_w],
                      dtype=np.int8,
                      attrs={"axis": 1})
    a_parts = [nhwc(t) for t in split_groups(graph, grouped, size, 1, g_count, f"{prefix}/a", np.uint8)]
    w_parts = split_groups(graph, w_perm, size, 1, g_count, f"{prefix}/w", np.int8)
    kernel_name = f"{name}, split-K x{g_count}"
    w_shape = constant(f"{prefix}/w_shape", _i64([-1, co]))
    zeros = group_scalars(graph, tq.zero_point, step, f"{prefix}/zero_point_g", np.uint8)
    scales = group_scalars(graph, tq.scale, step, f"{prefix}/scale_g", np.float32)
    outs = []
    for g in range(g_count):
        z_g, s_g = zeros[g], scales[g]
        cols = im2col_nhwc(graph, a_parts[g], z_g, kernel, strides, pads, dilations, f"{prefix}/im2col{g}")
        w_g = add_node(graph, "Reshape", f"{prefix}/w{g}/Reshape", [w_parts[g], w_shape], dtype=np.int8)
        acc = integer_product(graph, cols, w_g, z_g, w_zero, f"{prefix}/acc{g}",
                              product_meta(module, x, kernel_name, g, "nhwc"), metadata)
        outs.append(rescale(graph, acc, s_g, w_scale, f"{prefix}/rescale{g}"))
    return add_all(graph, outs, f"{prefix}/sum"), kernel_name, g_count


def lower_conv(graph: gs.Graph, node: gs.Node, x: gs.Tensor, tq, wt, step: gs.Tensor, prefix: str, module: str,
               metadata: dict, steps: int, resample: gs.Tensor | None = None,
               max_inflation: float = MAX_BATCH_INFLATION) -> tuple[gs.Tensor, str, int]:
    """-> (float NHWC output [B, Ho, Wo, Co] without bias, kernel name, accumulators). `resample`: pixel groups'
    run-time indices into the map row (lower_common.pixel_resample)."""
    co, c, kh, kw = wt.codes.shape
    kernel, strides, pads, dilations = conv_attrs(node, (kh, kw))
    pointwise = (kh, kw) == (1, 1) and strides == (1, 1) and not any(pads)
    taps = kh * kw
    w4 = np.ascontiguousarray(wt.codes.transpose(2, 3, 1, 0).reshape(taps, c, co))   # [tap, C, Co]
    w_zero = constant(f"{prefix}/w_zero_point", wt.zero_point.astype(np.int8))
    w_scale = constant(f"{prefix}/w_scale", wt.scale.astype(np.float32))
    name = "MatMulInteger u8xs8" + ("" if pointwise else f", im2col {kh}x{kw}")

    def nhwc(t):
        return add_node(graph, "Transpose", f"{t.name}/to_nhwc", [t], dtype=np.uint8, attrs={"perm": NCHW_TO_NHWC})

    if tq.axis == "tensor":
        s = step_row(graph, tq.scale, step, f"{prefix}/scale", [], np.float32)
        z = step_row(graph, tq.zero_point, step, f"{prefix}/zero_point", [], np.uint8)
        codes = nhwc(quantize_codes(graph, x, s, z, tq.bits, None, prefix, metadata, input_record(module, tq)))
        cols = im2col_nhwc(graph, codes, z, kernel, strides, pads, dilations, f"{prefix}/im2col")
        acc = integer_product(graph, cols, weight_tensor(graph, f"{prefix}/w", w4.reshape(taps * c, co)), z,
                              w_zero,
                              f"{prefix}/acc0", product_meta(module, x, name, -1, "nhwc"), metadata)
        return rescale(graph, acc, s, w_scale, f"{prefix}/rescale0"), name, 1
    if tq.axis == "channel":
        return channel_groups(graph, x, tq, w4, wt, step, kernel, strides, pads, dilations, name, prefix, module,
                              metadata, max_inflation)
    s, z = per_index_params(tq, step, graph, prefix, resample)
    # pixel groups: codes per pixel on [B, C, H*W]
    flat = add_node(graph, "Reshape", f"{prefix}/flatten", [x, constant(f"{prefix}/flat_shape", _i64([0, 0, -1]))])
    codes_flat = quantize_codes(graph, flat, s, z, tq.bits, -1, prefix, metadata, input_record(module, tq))
    if pointwise:
        rows = add_node(graph, "Transpose", f"{prefix}/rows", [codes_flat], dtype=np.uint8, attrs={"perm": [0, 2, 1]})
        w = w4.reshape(c, co)
        d = zero_point_rows(w, wt.zero_point)
        kernel_name = f"{name}, per-row scales"
        wide = with_zero_point_columns(graph, rows, z, d.shape[0], prefix)
        acc = integer_product(graph, wide, constant(f"{prefix}/w", np.concatenate([w, d])),
                              constant(f"{prefix}/a_zero", np.array(0, np.uint8)), w_zero, f"{prefix}/acc0",
                              product_meta(module, x, kernel_name, -1, "nhwc"), metadata)
        y = rescale(graph, acc, ones_scale(graph, steps, step, f"{prefix}/one"), w_scale, f"{prefix}/rescale0")
        row_scale = add_node(graph, "Reshape", f"{prefix}/row_scale",
                             [s, constant(f"{prefix}/row_shape", _i64([-1, 1]))])
        y = add_node(graph, "Mul", f"{prefix}/rescale_rows", [y, row_scale])               # [B, H*W, Co]
        shape = add_node(graph, "Shape", f"{prefix}/x_shape", [x], dtype=np.int64)
        out_shape = add_node(graph, "Concat", f"{prefix}/nhwc_shape", [
            add_node(graph, "Gather", f"{prefix}/x_b", [shape, constant(f"{prefix}/i0", _i64([0]))], dtype=np.int64,
                     attrs={"axis": 0}),
            add_node(graph, "Gather", f"{prefix}/x_hw", [shape, constant(f"{prefix}/i23", _i64([2, 3]))],
                     dtype=np.int64, attrs={"axis": 0}),
            constant(f"{prefix}/co", _i64([co]))], dtype=np.int64, attrs={"axis": 0})
        return add_node(graph, "Reshape", f"{prefix}/to_nhwc", [y, out_shape]), kernel_name, 1
    codes = nhwc(add_node(graph, "Reshape", f"{prefix}/unflatten", [codes_flat, add_node(
        graph, "Shape", f"{prefix}/x_shape4", [x], dtype=np.int64)], dtype=np.uint8))
    kernel_name = f"MatMulInteger u8xs8, per-tap {kh}x{kw} products with per-row scales (pixel groups)"
    y = pixel_groups_by_tap(graph, codes, z, s, x, w4, wt.zero_point, w_zero, wt.scale.astype(np.float32),
                            ones_scale(graph, steps, step, f"{prefix}/one"), kernel, strides, pads, dilations,
                            f"{prefix}/taps", lambda t: product_meta(module, x, kernel_name, t, "tap"), metadata)
    return y, kernel_name, taps


class LowerConv(Pass):
    """`max_inflation`: channel groups become one batched product when it costs at most this much more than the op
    (lower_batched.MAX_BATCH_INFLATION), else one product per group."""
    name = "lower_conv"

    def __init__(self, max_inflation: float = MAX_BATCH_INFLATION):
        self.max_inflation = max_inflation

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step = scalar_step(graph, step_index_tensor(graph))
        for entry, node, tq, x, wt in lowerable_nodes(graph, ctx, "conv"):
            prefix = lowered_prefix(entry.module)
            if wt.codes.ndim != 4:
                raise PassError(f"Conv {node.name!r}: only 2-D convolutions can be lowered")
            kernel_shape, strides, pads, dilations = conv_attrs(node, wt.codes.shape[2:])
            y, kernel, accs = lower_conv(graph, node, x, tq, wt, step, prefix, entry.module, ctx.node_metadata,
                                         ctx.steps, pixel_resample(graph, ctx, tq, x, "nchw", prefix),
                                         self.max_inflation)
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                y = add_node(graph, "Add", f"{prefix}/bias", [y, node.inputs[2]])
            out = node.outputs[0]
            node.outputs.clear()
            graph.nodes.append(gs.Node("Transpose", f"{prefix}/to_nchw", attrs={"perm": NHWC_TO_NCHW}, inputs=[y],
                                       outputs=[out]))
            add_report_row(ctx, {"module": entry.module, "node": entry.node, "op": "Conv", "axis": tq.axis,
                                 "groups": int(tq.scale.shape[1]), "kernel": kernel, "accumulators": accs,
                                 "output": out.name, "in_channels": int(wt.codes.shape[1]),
                                 "weight": f"{prefix}/taps/w0" if "per-tap" in kernel else f"{prefix}/w",
                                 "kernel_shape": list(kernel_shape), "strides": list(strides), "pads": list(pads),
                                 "dilations": list(dilations)})
        graph.cleanup()
        return graph
