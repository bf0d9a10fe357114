"""Channel (split-K) groups as ONE batched integer product per op (a helper of lower_linear and lower_conv).

The simulator's accumulator of channel group g is acc_g = sum_{k in g} (a_k - z_g)(w_kn - zw_n) (DESIGN.md
section 6). Writing it as G separate MatMulIntegers (each with its Slice/Cast/Mul epilogue) made the lowered graph
of a DGQ configuration ~25k nodes: 25 s to create a default onnxruntime session. Here the step's group map
gathers each group's channels into Kp contiguous slots (Kp: the largest group over all steps; padding slots read
channel 0 against a weight row holding the weight zero points, w - zw = 0, so they add 0), and

    A [G, M, Kc] uint8  = the group's codes, then zero-point slots holding z_g     (with_zero_rows + the gather)
    W [G, Kc, N] int8   = the group's weight rows, then correction rows d_g with
                          sum_i (d_gin - zw_n) = -sum_{k in g} (w_kn - zw_n)        (lower_common.correction_rows)
    acc = MatMulInteger(A, W, 0, zw[G, 1, N])  ->  int32, acc[g] = acc_g exactly

(onnxruntime requires a scalar activation zero point, so the per-group z_g ride inside the product, the trick
lower_common.zero_point_rows uses for per-row zero points), then y = ReduceSum_g(Cast(acc) * (s_g * sw)): the
Cast -> Mul fuses into MatMulIntegerToFloat in a default session. A convolution batches [B, G, Ho*Wo, Kc] patches
against the same [G, Kc, Co] weights (group axis 1). The accumulator node carries LOWERED_GROUP = GROUPS_BATCHED,
LOWERED_GROUP_COUNT and LOWERED_GROUP_AXIS (passes/contract.py): `dgq verify` reads group g as that slice.
Per-step group maps gather the step's permutation, weight rows and correction rows at run time (small tensors);
a shared map makes them constants that onnxruntime folds at session start. The lowering passes batch an op only
when padding costs at most MAX_BATCH_INFLATION (k-means groups are rarely that even; otherwise one product per
group, lower_common.group_layout).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import add_node, constant
from passes.contract import GROUPS_BATCHED, LOWERED_GROUP, LOWERED_GROUP_AXIS, LOWERED_GROUP_COUNT


# Batch only when the padded groups cost at most this much more than the op (G * slots / K): measured on the
# embedded model (onnxruntime 1.31, 2 threads), k-means groups padded to the largest one (~2.7x for DGQ W8A8 G8,
# ~3.2x for W4A6 G16) made the batched product 1.4-1.9x slower per call than one product per group, while with
# equal widths one batched product of 8 groups ran 2.4x faster than 8 products (no padding, fewer nodes).
MAX_BATCH_INFLATION = 1.5


def batch_inflation(groups: int, slots: int, k: int) -> float:
    """Columns of the batched product over the op's own reduction length: G * (Kp + zero-point slots) / K."""
    return groups * slots / max(k, 1)


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def padded_group_layout(group_map: np.ndarray, groups: int, zero_slots: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """[T', K] group map -> (activation row per slot [T', G*(Kp + zero_slots)], weight row per slot [T', G*Kp], Kp),
    int64. Slot (g, j < Kp) is the j-th channel of group g; padding slots read channel 0 against weight row K (the
    row of weight zero points); the group's last `zero_slots` slots read row K + g, the zero-point row of group g
    that with_zero_rows appends. Kp >= 1, so an empty group is a product of zeros, never a zero-width one."""
    k = group_map.shape[1]
    sizes = np.stack([np.bincount(row, minlength=groups) for row in group_map])
    kp = max(1, int(sizes.max()))
    perm_a = np.zeros((len(group_map), groups, kp + zero_slots), np.int64)
    perm_w = np.full((len(group_map), groups, kp), k, np.int64)
    perm_a[:, :, kp:] = k + np.arange(groups)[None, :, None]
    for t, row in enumerate(group_map):
        for g in range(groups):
            members = np.nonzero(row == g)[0]
            perm_a[t, g, : len(members)] = members
            perm_w[t, g, : len(members)] = members
    return perm_a.reshape(len(group_map), -1), perm_w.reshape(len(group_map), -1), kp


def group_column_sums(w_taps: np.ndarray, w_zero: np.ndarray, perm_w: np.ndarray, groups: int, kp: int):
    """w_taps int8 [taps, K, N] -> (padded weights [taps, K + 1, N] (row K = zw), per step and group
    sum_{taps, k in g} (w - zw): int64 [T', G, N])."""
    taps, k, n = w_taps.shape
    padded = np.concatenate([w_taps, np.broadcast_to(w_zero.astype(np.int8).reshape(1, 1, n), (taps, 1, n))], axis=1)
    centred = padded.astype(np.int64) - w_zero.astype(np.int64)
    sums = np.stack([centred[:, row].reshape(taps, groups, kp, n).sum(axis=(0, 2)) for row in perm_w])
    return padded, sums


def correction_rows_of(graph: gs.Graph, w_rows: gs.Tensor, w_zero: np.ndarray, slots: int, r: int, reduce_axes,
                       prefix: str) -> gs.Tensor:
    """correction_rows computed at run time from the step's gathered weight rows (a [T', G, r, N] table would
    be most of the graph's file): w_rows int8 [G, ..., N] with `slots` rows per group over `reduce_axes` (padding
    rows hold zw) -> d int8 [G, r, N] with sum_i d_i = target = (slots + r) zw - sum(w_rows), by Hermite's identity

        d_i = floor((target + i) / r),   i < r     (each d_i is floor or ceil of target / r: within int8)

    ONNX integer Div truncates, so the numerator is lifted by r * LIFT (> |target| + r) to make it a floor."""
    name = f"{prefix}/correction"
    lift = -(-(2 ** 22) // r)
    zw = w_zero.astype(np.int64)
    total = add_node(graph, "ReduceSum", f"{name}/sum", [
        add_node(graph, "Cast", f"{name}/Cast", [w_rows], dtype=np.int32, attrs={"to": onnx.TensorProto.INT32}),
        constant(f"{name}/axes", _i64(list(reduce_axes)))], dtype=np.int32, attrs={"keepdims": 1})  # [G, 1, N]
    numerator = constant(f"{name}/numerator", ((slots + r) * zw[None, :] + np.arange(r)[:, None] + r * lift)
                         .astype(np.int32))                                                # [r, N]
    lifted = add_node(graph, "Div", f"{name}/floor", [
        add_node(graph, "Sub", f"{name}/target", [numerator, total], dtype=np.int32),
        constant(f"{name}/r", np.array(r, np.int32))], dtype=np.int32)                      # [G, r, N]
    d = add_node(graph, "Sub", f"{name}/unlift", [lifted, constant(f"{name}/lift", np.array(lift, np.int32))],
                 dtype=np.int32)
    return add_node(graph, "Cast", f"{name}/int8", [d], dtype=np.int8, attrs={"to": onnx.TensorProto.INT8})


def with_zero_rows(graph: gs.Graph, codes: gs.Tensor, zero: gs.Tensor, axis: int, rank: int, groups: int,
                   prefix: str) -> gs.Tensor:
    """codes uint8 with K channels on `axis` -> K + G channels: channel K + g holds z_g everywhere (zero [G] uint8).
    A block copy next to the codes, gathered into each group's zero-point slots with its channels."""
    name = f"{prefix}/zero_rows"
    parts = [constant(f"{name}/groups", _i64([groups]))]
    if axis > 0:
        parts.insert(0, add_node(graph, "Shape", f"{name}/lead", [codes], dtype=np.int64, attrs={"end": axis}))
    if axis < rank - 1:
        parts.append(add_node(graph, "Shape", f"{name}/tail", [codes], dtype=np.int64, attrs={"start": axis + 1}))
    shape = add_node(graph, "Concat", f"{name}/shape", parts, dtype=np.int64, attrs={"axis": 0})
    z = add_node(graph, "Reshape", f"{name}/z", [zero, constant(f"{name}/z_shape", _i64(
        [1] * axis + [-1] + [1] * (rank - axis - 1)))], dtype=np.uint8)
    block = add_node(graph, "Expand", f"{name}/Expand", [z, shape], dtype=np.uint8)
    return add_node(graph, "Concat", f"{name}/Concat", [codes, block], dtype=np.uint8, attrs={"axis": axis})


def batched_product(graph: gs.Graph, a: gs.Tensor, w: gs.Tensor, w_zero: np.ndarray, scale_g: gs.Tensor,
                    w_scale: np.ndarray, groups: int, group_axis: int, prefix: str, meta: dict,
                    metadata: dict) -> gs.Tensor:
    """a uint8 [G, M, Kc] (group_axis 0) or [B, G, M, Kc] (group_axis 1), w int8 [G, Kc, N], scale_g [G] float32
    -> float y, the accumulators times s_g * sw summed over the group axis ([M, N] or [B, M, N])."""
    n = w_zero.shape[0]
    zw = constant(f"{prefix}/w_zero_point", np.ascontiguousarray(
        np.broadcast_to(w_zero.astype(np.int8).reshape(1, 1, n), (groups, 1, n))))
    name = f"{prefix}/acc"
    acc = add_node(graph, "MatMulInteger", name, [a, w, constant(f"{prefix}/a_zero", np.array(0, np.uint8)), zw],
                   f"{name}_output_0", dtype=np.int32)
    metadata[name] = {**meta, LOWERED_GROUP: GROUPS_BATCHED, LOWERED_GROUP_COUNT: str(groups),
                      LOWERED_GROUP_AXIS: str(group_axis)}
    s = add_node(graph, "Reshape", f"{prefix}/scale_g", [scale_g, constant(f"{prefix}/scale_g_shape",
                                                                           _i64([-1, 1, 1]))])
    scale = add_node(graph, "Mul", f"{prefix}/rescale/scale", [s, constant(f"{prefix}/w_scale",
                                                                           w_scale.astype(np.float32))])
    as_float = add_node(graph, "Cast", f"{prefix}/rescale/Cast", [acc], attrs={"to": onnx.TensorProto.FLOAT})
    y = add_node(graph, "Mul", f"{prefix}/rescale/Mul", [as_float, scale])
    return add_node(graph, "ReduceSum", f"{prefix}/sum", [y, constant(f"{prefix}/group_axis", _i64([group_axis]))],
                    attrs={"keepdims": 0})
