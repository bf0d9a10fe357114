"""Lower every quantized Linear (MatMul / Gemm with integer weights) to MatMulInteger + a float epilogue.

Per grouping of the input activation (the simulator's schedules, DESIGN.md section 6):
- tensor: codes = Q(x, s_t, z_t); acc = MatMulInteger(codes, W, z_t, zw); y = acc * (s_t * sw) (+ bias);
- pixel (token) groups: the scale varies along rows, so it factors out of one product. MatMulInteger takes
  only a per-tensor activation zero point, so the per-row zero points ride inside the same product: r extra
  columns of A hold z_m and r int8 rows of W sum to -sum_k (w_kn - zw_n) (lower_common.zero_point_rows);
  y = acc * sw * s_m;
- channel groups (split-K): codes permuted so each group's channels are contiguous (the step's group map) and
  multiplied by the matching weight rows in ONE batched MatMulInteger [G, M, K/G (+ pad, + r)], the per-group
  zero points carried by zero-point columns, each group's slice rescaled by s_g * sw and summed over G
  (passes/lower_batched.py).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant, step_index_tensor
from passes.errors import PassError
from passes.lower_batched import (MAX_BATCH_INFLATION, batch_inflation, batched_product, correction_rows_of,
                                  group_column_sums, padded_group_layout, with_zero_rows)
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


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def lower_matmul(graph: gs.Graph, x: gs.Tensor, w: np.ndarray, sw: np.ndarray, zw: np.ndarray, tq, step: gs.Tensor,
                 prefix: str, module: str, metadata: dict, steps: int, layout: str = "nlc",
                 rank: int | None = None, resample: gs.Tensor | None = None,
                 max_inflation: float = MAX_BATCH_INFLATION) -> tuple[gs.Tensor, str, int]:
    """x [..., K] float, w [K, N] int8 codes -> (float y [..., N] without bias, kernel name, accumulators).
    `layout` names the rows of x for verification (nlc: [B, tokens, K]; nhwc: conv pixels); `resample`: token
    groups' run-time indices into the map row (lower_common.pixel_resample)."""
    rank = len(x.shape) if x.shape is not None else rank
    if tq.axis == "channel":
        rank = None  # channel groups work on [M, K] whatever the rank
    w_zero = constant(f"{prefix}/w_zero_point", zw.astype(np.int8))
    w_scale = constant(f"{prefix}/w_scale", sw.astype(np.float32))
    if tq.axis == "tensor":
        s = step_row(graph, tq.scale, step, f"{prefix}/scale", [], np.float32)
        z = step_row(graph, tq.zero_point, step, f"{prefix}/zero_point", [], np.uint8)
        codes = quantize_codes(graph, x, s, z, tq.bits, None, prefix, metadata, input_record(module, tq))
        kernel = "MatMulInteger u8xs8"
        acc = integer_product(graph, codes, weight_tensor(graph, f"{prefix}/w", w), z, w_zero,
                              f"{prefix}/acc0",
                              product_meta(module, x, kernel, -1, layout), metadata)
        return rescale(graph, acc, s, w_scale, f"{prefix}/rescale0"), kernel, 1
    if tq.axis == "pixel":
        if rank not in (3, None):
            raise PassError(f"({module}, input): token groups need a [B, N, C] input, {x.name!r} has rank {rank}")
        s, z = per_index_params(tq, step, graph, prefix, resample)
        codes = quantize_codes(graph, x, s, z, tq.bits, -2, prefix, metadata, input_record(module, tq))
        d = zero_point_rows(w, zw)
        r = d.shape[0]
        wide = with_zero_point_columns(graph, codes, z, r, prefix)
        kernel = "MatMulInteger u8xs8, per-row scales"
        acc = integer_product(graph, wide, constant(f"{prefix}/w", np.concatenate([w, d])),
                              constant(f"{prefix}/a_zero", np.array(0, np.uint8)), w_zero, f"{prefix}/acc0",
                              product_meta(module, x, kernel, -1, layout), metadata)
        y = rescale(graph, acc, ones_scale(graph, steps, step, f"{prefix}/one"), w_scale, f"{prefix}/rescale0")
        rows_scale = add_node(graph, "Reshape", f"{prefix}/row_scale", [s, constant(f"{prefix}/row_shape",
                                                                                    np.array([-1, 1], np.int64))])
        return add_node(graph, "Mul", f"{prefix}/rescale_rows", [y, rows_scale]), kernel, 1
    # channel groups: one batched split-K product (passes/lower_batched.py)
    g_count, k = tq.scale.shape[1], w.shape[0]
    s, z, scale_g, zero_g = per_index_params(tq, step, graph, prefix, group_rows=True)
    codes = quantize_codes(graph, x, s, z, tq.bits, -1, prefix, metadata, input_record(module, tq))
    _, perms_w, kp = padded_group_layout(tq.group_map, g_count)
    w_padded, sums = group_column_sums(w[None], zw, perms_w, g_count, kp)
    r = correction_count(sums, zw)
    if batch_inflation(g_count, kp + r, k) > max_inflation:
        total, kernel = split_k(graph, codes, w_padded[0], w_zero, w_scale, tq, step, prefix, module, x, layout,
                                metadata)
    else:
        total, kernel = batched(graph, codes, w_padded, perms_w, kp, r, zw, sw, zero_g, scale_g, tq, step, prefix,
                                module, x, layout, metadata)
    lead = add_node(graph, "Shape", f"{prefix}/x_lead", [x], dtype=np.int64, attrs={"end": -1})
    out_shape = add_node(graph, "Concat", f"{prefix}/out_shape", [lead, constant(f"{prefix}/n_out", _i64(
        [w.shape[1]]))], dtype=np.int64, attrs={"axis": 0})
    return add_node(graph, "Reshape", f"{prefix}/unflatten", [total, out_shape]), kernel, g_count


def batched(graph, codes, w_padded, perms_w, kp, r, zw, sw, zero_g, scale_g, tq, step, prefix, module, x, layout,
            metadata):
    """Channel groups as one batched product (passes/lower_batched.py) -> (float [M, N], kernel name)."""
    g_count, k = tq.scale.shape[1], w_padded.shape[1] - 1
    perms, _, _ = padded_group_layout(tq.group_map, g_count, r)
    # [..., K] -> [K, M] (channels first: the Gathers copy whole rows) + G zero-point rows -> [G, Kp + r, M]
    flat = add_node(graph, "Reshape", f"{prefix}/flatten", [codes, constant(f"{prefix}/flat_shape", _i64([-1, k]))],
                    dtype=np.uint8)
    first = add_node(graph, "Transpose", f"{prefix}/channels_first", [flat], dtype=np.uint8, attrs={"perm": [1, 0]})
    first = with_zero_rows(graph, first, zero_g, 0, 2, g_count, prefix)
    grouped = add_node(graph, "Gather", f"{prefix}/permute", [first, step_row(graph, perms, step, f"{prefix}/perm",
                                                                              [-1], np.int32)],
                       dtype=np.uint8, attrs={"axis": 0})
    grouped = add_node(graph, "Reshape", f"{prefix}/groups", [grouped, constant(f"{prefix}/groups_shape",
                                                                                _i64([g_count, kp + r, -1]))],
                       dtype=np.uint8)
    a = add_node(graph, "Transpose", f"{prefix}/channels_last", [grouped], dtype=np.uint8, attrs={"perm": [0, 2, 1]})
    w_rows = add_node(graph, "Gather", f"{prefix}/permute_w", [
        weight_tensor(graph, f"{prefix}/w", w_padded[0]), step_row(graph, perms_w, step, f"{prefix}/perm_w", [-1],
                                                                   np.int32)], dtype=np.int8, attrs={"axis": 0})
    w_rows = add_node(graph, "Reshape", f"{prefix}/w_groups", [w_rows, constant(f"{prefix}/w_groups_shape",
                                                                                 _i64([g_count, kp, -1]))],
                      dtype=np.int8)
    corr = correction_rows_of(graph, w_rows, zw, kp, r, [1], prefix)                      # [G, r, N]
    w_g = add_node(graph, "Concat", f"{prefix}/w_with_correction", [w_rows, corr], dtype=np.int8, attrs={"axis": 1})
    kernel = f"MatMulInteger u8xs8, batched split-K x{g_count}"
    return batched_product(graph, a, w_g, zw, scale_g, sw, g_count, 0, prefix,
                           product_meta(module, x, kernel, -1, layout), metadata), kernel   # [M, N]


def split_k(graph, codes, w_padded, w_zero, w_scale, tq, step, prefix, module, x, layout, metadata):
    """Channel groups as one product per group (codes permuted so each group is contiguous, split at the step's
    group sizes) -> (float [M, N], kernel name). `w_padded` [K + 1, N]: the weights and a row of weight zero points
    (w - zw = 0) that padding slots read (lower_batched.group_column_sums)."""
    g_count = tq.scale.shape[1]
    perms, perms_w, sizes = group_layout(tq)
    perm = step_row(graph, perms, step, f"{prefix}/perm", [-1], np.int64)
    perm_w = step_row(graph, perms_w, step, f"{prefix}/perm_w", [-1], np.int64)
    size = step_row(graph, sizes, step, f"{prefix}/sizes", [-1], np.int64)
    # [..., K] -> [K, M] (channels first: the Gather copies whole rows), split, each group back to [M, K_g]
    flat = add_node(graph, "Reshape", f"{prefix}/flatten", [codes, constant(f"{prefix}/flat_shape",
                                                                           np.array([-1, w_padded.shape[0] - 1],
                                                                                    np.int64))],
                    dtype=np.uint8)
    first = add_node(graph, "Transpose", f"{prefix}/channels_first", [flat], dtype=np.uint8, attrs={"perm": [1, 0]})
    grouped = add_node(graph, "Gather", f"{prefix}/permute", [first, perm], dtype=np.uint8, attrs={"axis": 0})
    a_parts = [add_node(graph, "Transpose", f"{prefix}/a{g}/channels_last", [t], dtype=np.uint8, attrs={"perm": [1, 0]})
               for g, t in enumerate(split_groups(graph, grouped, size, 0, g_count, f"{prefix}/a", np.uint8))]
    w_perm = add_node(graph, "Gather", f"{prefix}/permute_w", [weight_tensor(graph, f"{prefix}/w", w_padded), perm_w],
                      dtype=np.int8, attrs={"axis": 0})
    w_parts = split_groups(graph, w_perm, size, 0, g_count, f"{prefix}/w", np.int8)
    kernel = f"MatMulInteger u8xs8, split-K x{g_count}"
    zeros = group_scalars(graph, tq.zero_point, step, f"{prefix}/zero_point_g", np.uint8)
    scales = group_scalars(graph, tq.scale, step, f"{prefix}/scale_g", np.float32)
    outs = []
    for g in range(g_count):
        z_g, s_g = zeros[g], scales[g]
        acc = integer_product(graph, a_parts[g], w_parts[g], z_g, w_zero, f"{prefix}/acc{g}",
                              product_meta(module, x, kernel, g, layout), metadata)
        outs.append(rescale(graph, acc, s_g, w_scale, f"{prefix}/rescale{g}"))
    return add_all(graph, outs, f"{prefix}/sum"), kernel


class LowerLinear(Pass):
    """`max_inflation`: channel groups become one batched product when it costs at most this much more than the op
    (lower_batched.MAX_BATCH_INFLATION), else one product per group."""
    name = "lower_linear"

    def __init__(self, max_inflation: float = MAX_BATCH_INFLATION):
        self.max_inflation = max_inflation

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step = scalar_step(graph, step_index_tensor(graph))
        for entry, node, tq, x, wt in lowerable_nodes(graph, ctx, "linear"):
            prefix = lowered_prefix(entry.module)
            w = wt.codes
            if node.op == "Gemm":
                a = node.attrs
                has_bias = len(node.inputs) > 2
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or (has_bias and a.get("beta", 1.0) != 1.0):
                    raise PassError(f"Gemm {node.name!r}: only alpha = beta = 1, transA = 0 can be lowered")
                if a.get("transB", 0):
                    w = np.ascontiguousarray(w.T)
            elif node.op != "MatMul":
                raise PassError(f"linear {entry.module}: {node.op} node {node.name!r} is not a MatMul or Gemm")
            resample = pixel_resample(graph, ctx, tq, x, "nc" if node.op == "Gemm" else "nlc", prefix)
            y, kernel, accs = lower_matmul(graph, x, w, wt.scale, wt.zero_point, tq, step, prefix, entry.module,
                                           ctx.node_metadata, ctx.steps, rank=2 if node.op == "Gemm" else None,
                                           resample=resample, max_inflation=self.max_inflation)
            if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
                y = add_node(graph, "Add", f"{prefix}/bias", [y, node.inputs[2]])
            out = node.outputs[0]
            node.outputs.clear()
            graph.nodes.append(gs.Node("Identity", f"{prefix}/output", inputs=[y], outputs=[out]))
            add_report_row(ctx, {"module": entry.module, "node": entry.node, "op": node.op, "axis": tq.axis,
                                 "groups": int(tq.scale.shape[1]), "kernel": kernel, "accumulators": accs,
                                 "output": out.name, "weight": f"{prefix}/w", "in_features": int(w.shape[0])})
        graph.cleanup()
        return graph
