"""Building blocks of the integer lowering (`dgq compile --target onnxruntime-cpu`): standard ONNX ops only.

Integer arithmetic, exactly as the simulator's contract (DESIGN.md section 6) defines it:
- activation codes a = QuantizeLinear(x, s, z) on the recipe's grid (uint8 storage, Clip for b < 8 bits);
- weight integers w - zw from the compiled graph's int8/int4 weight initializers (int4 widened to int8);
- MatMulInteger(u8 codes, s8 weights, a_zero_point, w_zero_point) -> int32 accumulators (the fast u8 x s8
  kernel; ConvInteger is avoided: with s8 weights it is 3x slower than fp32 Conv here, and it refuses
  per-channel weight zero points), convolutions as im2col on the uint8 codes (NHWC: Pad with the zero point,
  one Slice per kernel tap, Concat) + MatMulInteger;
- epilogue in float32: Cast(acc) * (s_a * s_w) (+ bias); written as Cast -> Mul(acc, Mul(s_a, s_w)) so a
  default onnxruntime session fuses it into one integer GEMM with a float output stage (MatMulIntegerToFloat).

Every lowered op's accumulators are MatMulInteger outputs named `dgq/<module>/lower/acc*` with node
metadata (LOWERED_* keys) naming the float input, the grouping and the kernel, so `dgq verify` can expose them
as graph outputs and compare them with the simulator's integer kernels, bit for bit. Channel (split-K) groups
are one batched product per op (passes/lower_batched.py).
(About 390 lines: the shared builders of three lowering passes, which may not import one another.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from passes.base import add_node, constant
from passes.contract import (  # noqa: F401  (the lowering's contract names, re-exported for the lowering passes)
    GROUP_MAP, FUSION_BARRIER_SUFFIX, LOWER_ROLE, LOWERED, LOWERED_GROUP, LOWERED_INPUT, LOWERED_KERNEL, LOWERED_LAYOUT,
    LOWERING_REPORT, META_MODULE, NAMESPACE, STEP_INDEX, STEP_PREFIX, QuantizerRecord, node_prefix, table_name,
)
from passes.errors import PassError
from passes.patterns import reads_text_tokens
from passes.pixel_groups import group_index, level_grid

LOWERED_MODULE = META_MODULE


INT64_MAX = np.iinfo(np.int64).max


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def add_report_row(ctx, row: dict) -> None:
    rows = json.loads(ctx.artifacts.get(LOWERING_REPORT, "[]"))
    rows.append(row)
    ctx.artifacts[LOWERING_REPORT] = json.dumps(rows, indent=1, sort_keys=True)


def product_meta(module: str, x: gs.Tensor, kernel: str, group: int, layout: str) -> dict:
    return {LOWERED_MODULE: module, LOWERED_INPUT: x.name, LOWERED_KERNEL: kernel, LOWERED_GROUP: str(group),
            LOWERED_LAYOUT: layout}


def ones_scale(graph: gs.Graph, steps: int, step: gs.Tensor, name: str) -> gs.Tensor:
    """A per-step scalar 1.0 (computed, so the rescale still fuses into the integer GEMM)."""
    return step_row(graph, np.ones((max(steps, 2), 1), np.float32), step, name, [], np.float32)


# ---------------------------------------------------------------- weights

def _int4_values(proto: onnx.TensorProto) -> np.ndarray:
    raw = np.frombuffer(proto.raw_data, dtype=np.uint8)
    nibbles = np.stack([raw & 0x0F, raw >> 4], axis=-1).reshape(-1)[: int(np.prod(proto.dims))]
    signed = nibbles.astype(np.int8)
    signed[signed > 7] -= 16
    return signed.reshape(tuple(proto.dims))


def integer_values(tensor: gs.Constant) -> np.ndarray:
    """An int8 or packed INT4 initializer as an int8 array (int4 widened: codes keep their values)."""
    values = tensor._values
    if isinstance(values, LazyValues) and values.tensor.data_type == onnx.TensorProto.INT4:
        return _int4_values(values.tensor)
    array = values.load() if isinstance(values, LazyValues) else np.asarray(values)
    if array.dtype != np.int8:
        if array.dtype.kind not in "iu" or array.min() < -128 or array.max() > 127:
            raise PassError(f"weight {tensor.name!r}: expected int8/int4 codes, got {array.dtype}")
        array = array.astype(np.int8)
    return array


@dataclass
class QuantWeight:
    codes: np.ndarray        # int8, the op's weight layout
    scale: np.ndarray        # float32 [C_out]
    zero_point: np.ndarray   # int8 [C_out]
    axis: int                # output-channel axis


def weight_of(node: gs.Node) -> QuantWeight:
    """The integer weight behind the op's DequantizeLinear(int codes, scale, zero point)."""
    w = node.inputs[1]
    producer = w.inputs[0] if w.inputs else None
    if producer is not None and producer.op == "Reshape" and producer.name.endswith(FUSION_BARRIER_SUFFIX):
        w = producer.inputs[0]  # a fusion barrier (passes/insert_fusion_barriers.py)
        producer = w.inputs[0] if w.inputs else None
    if producer is None or producer.op != "DequantizeLinear" or not all(
            isinstance(t, gs.Constant) for t in producer.inputs):
        raise PassError(f"{node.op} node {node.name!r}: weight {w.name!r} is not a DequantizeLinear of constant "
                        "integer codes (run quantize_weights first)")
    codes, scale, zero = producer.inputs[:3]
    axis = int(producer.attrs.get("axis", 1))
    return QuantWeight(integer_values(codes), np.asarray(scale.values, np.float32).reshape(-1),
                       integer_values(zero).reshape(-1), axis)


def lowerable_nodes(graph: gs.Graph, ctx, kind: str):
    """(module-map entry, node, input quantizer, float input, quantized weight) of every `kind` ("conv" or
    "linear") node whose input and weight the recipe quantizes and that no earlier pass has lowered."""
    by_name = {n.name: n for n in graph.nodes}
    for entry in ctx.module_map:
        tq = ctx.entry(entry.module, "input")
        if entry.kind != kind or tq is None or ctx.entry(entry.module, "weight") is None:
            continue
        node = by_name.get(entry.node)
        if node is None:  # lowered already (lower_qlinear, the fast variant)
            continue
        yield entry, node, tq, float_source(node.inputs[0], input_prefix(entry.module)), weight_of(node)


def lowered_prefix(module: str) -> str:
    return node_prefix(module, LOWER_ROLE)


def input_prefix(module: str) -> str:
    """The prefix of the nodes that quantize the module's input (the QDQ the lowering replaces)."""
    return node_prefix(module, "input") + "/"


def float_source(tensor: gs.Tensor, prefix: str) -> gs.Tensor:
    """Walk back through the nodes a pass inserted under `prefix` (the QDQ of this input) to the float tensor."""
    for _ in range(16):
        producer = tensor.inputs[0] if tensor.inputs else None
        if producer is None or not producer.name.startswith(prefix):
            return tensor
        tensor = producer.inputs[0]
    raise PassError(f"cannot find the float input behind {tensor.name!r} ({prefix}...)")


# ---------------------------------------------------------------- per-step parameters

def scalar_step(graph: gs.Graph, step: gs.Tensor) -> gs.Tensor:
    """The step index as a scalar (one Squeeze per graph, shared by every lowered op): Gather(table [T, X], scalar)
    is the row [X] itself, so step_row needs no Reshape (every node counts: onnxruntime's session start-up grows
    faster than linearly with the node count of a graph)."""
    name = f"{STEP_INDEX}_scalar"
    for node in graph.nodes:
        if node.outputs and node.outputs[0].name == name:
            return node.outputs[0]
    out = gs.Variable(name, dtype=np.int64, shape=[])
    graph.nodes.append(gs.Node("Squeeze", f"{STEP_PREFIX}/Squeeze", inputs=[step, constant(f"{STEP_PREFIX}/axis0",
                                                                                       _i64([0]))], outputs=[out]))
    return out


def step_row(graph: gs.Graph, table: np.ndarray, step: gs.Tensor, name: str, shape, dtype,
             initializer: str | None = None) -> gs.Tensor:
    """Row `step` of a [T, X] table, reshaped to `shape`. Gathered even when all rows are equal: onnxruntime
    fuses Cast -> Mul(acc, Mul(s_a, s_w)) into its integer GEMM only while the scale is computed.
    `initializer`: the table's name (default `{name}_table`). A scalar `step` (scalar_step) gathers the row
    itself: no Reshape when `shape` is the row's shape ([-1] for a [T, X] table)."""
    table = np.asarray(table, dtype=dtype)
    if table.shape[0] == 1:  # one row for all steps (a shared group map)
        return constant(initializer or f"{name}_const", table[0].reshape(shape))
    row = add_node(graph, "Gather", f"{name}/Gather", [constant(initializer or f"{name}_table", table), step],
                   dtype=dtype, attrs={"axis": 0})
    if step.shape == [] and (list(shape) == list(table.shape[1:]) or (list(shape) == [-1] and table.ndim == 2)):
        return row
    return add_node(graph, "Reshape", f"{name}/Reshape", [row, constant(f"{name}/shape", _i64(shape))], dtype=dtype)


def input_record(module: str, tq) -> dict:
    """The quantizer metadata of a lowered op's input codes (what `dgq check` reads: module, role, bits, grouping)."""
    return QuantizerRecord(module, "input", "uniform", int(tq.bits), tq.axis).to_props()


def quantize_codes(graph: gs.Graph, x: gs.Tensor, scale: gs.Tensor, zero: gs.Tensor, bits: int, axis: int | None,
                   prefix: str, metadata: dict | None = None, record: dict | None = None) -> gs.Tensor:
    """uint8 codes q = clamp(round_half_even(x / s) + z, 0, 2^b - 1), the contract's quantizer.

    Per tensor: QuantizeLinear (+ Clip when b < 8). Per axis: onnxruntime's per-axis QuantizeLinear is a
    scalar loop (72 ms for a [2, 1024, 320] tensor here, 40x its per-tensor kernel), so the same arithmetic is
    spelled out: Div (float32 x / s, as QuantizeLinear) -> Round (half to even) -> Add z (exact: integers) ->
    QuantizeLinear(scale 1, zero 0) as the saturating cast to uint8 (exact on integral values)."""
    if axis is not None:
        shape = constant(f"{prefix}/param_shape", _i64([-1] + [1] * (-axis - 1))) if axis < 0 else None
        if shape is None:
            raise PassError("internal: per-axis codes need a negative axis")
        z = add_node(graph, "Cast", f"{prefix}/zero_float", [zero], attrs={"to": onnx.TensorProto.FLOAT})
        s = scale
        if axis != -1:  # [N] already broadcasts along the last axis
            s = add_node(graph, "Reshape", f"{prefix}/scale_axis", [scale, shape])
            z = add_node(graph, "Reshape", f"{prefix}/zero_axis", [z, shape])
        ratio = add_node(graph, "Div", f"{prefix}/Div", [x, s])
        rounded = add_node(graph, "Round", f"{prefix}/Round", [ratio])
        shifted = add_node(graph, "Add", f"{prefix}/AddZero", [rounded, z])
        x, scale, zero = shifted, constant(f"{prefix}/unit_scale", np.array(1.0, np.float32)), \
            constant(f"{prefix}/unit_zero", np.array(0, np.uint8))
    codes = add_node(graph, "QuantizeLinear", f"{prefix}/QuantizeLinear", [x, scale, zero], dtype=np.uint8)
    if metadata is not None and record:
        metadata[f"{prefix}/QuantizeLinear"] = dict(record)
    if bits < 8:
        codes = add_node(graph, "Clip", f"{prefix}/Clip",
                         [codes, constant(f"{prefix}/clip_min", np.array(0, np.uint8)),
                          constant(f"{prefix}/clip_max", np.array(2 ** bits - 1, np.uint8))], dtype=np.uint8)
    return codes


def pixel_resample(graph: gs.Graph, ctx, tq, x: gs.Tensor, layout: str, prefix: str) -> gs.Tensor | None:
    """int64 indices into a pixel map's calibrated row for `x`'s pixels at run time (pixel_groups.group_index), or
    None: not pixel groups, or a map the QDQ graph keeps at its length (text tokens; no level of the calibrated grid).
    The same decision and the same resampling as the QDQ graph's (insert_activation_qdq.pixel_grid), so the lowered
    graph runs at any latent size and quantizes exactly as the QDQ graph does there."""
    if tq.axis != "pixel" or layout == "nc" or reads_text_tokens(graph, x):
        return None
    grid = level_grid(tq.group_map.shape[1], ctx.recipe.resolution)
    return None if grid is None else group_index(graph, grid, x, layout, prefix)


def per_index_params(tq, step: gs.Tensor, graph: gs.Graph, prefix: str,
                     resample: gs.Tensor | None = None, group_rows: bool = False) -> tuple:
    """Per-index (channel or pixel) scale [N] and zero point [N] of the step: table row -> group map gather.
    `resample` (pixel_resample): the run-time pixels' indices into the map row. `group_rows`: also return the
    step's per-group scale [G] and zero point [G] rows."""
    scale = step_row(graph, tq.scale, step, f"{prefix}/scale", [-1], np.float32)
    zero = step_row(graph, tq.zero_point, step, f"{prefix}/zero_point", [-1], np.uint8)
    index = step_row(graph, tq.group_map.astype(np.int64), step, f"{prefix}/group_map", [-1], np.int64,
                     initializer=table_name(prefix, GROUP_MAP))
    if resample is not None:
        index = add_node(graph, "Gather", f"{prefix}/group_map/Resample", [index, resample], dtype=np.int64,
                         attrs={"axis": 0})
    per_index = (add_node(graph, "Gather", f"{prefix}/scale/GatherGroups", [scale, index], attrs={"axis": 0}),
                 add_node(graph, "Gather", f"{prefix}/zero_point/GatherGroups", [zero, index], dtype=np.uint8,
                          attrs={"axis": 0}))
    return (*per_index, scale, zero) if group_rows else per_index


def group_layout(tq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel groups made contiguous, per map row: -> (activation permutation [T', K + E], weight permutation
    [T', K + E], group sizes [T', G]), int64.

    A group empty at some step would be a zero-width MatMulInteger, whose output onnxruntime leaves
    uninitialised; instead every group gets at least one slot, and rows are padded to one length: the extra
    slots read activation channel 0 and weight row K, which the lowering appends holding the weight zero points
    (w - zw = 0), so they add 0."""
    g = tq.scale.shape[1]
    k = tq.group_map.shape[1]
    sizes = np.stack([np.bincount(row, minlength=g) for row in tq.group_map]).astype(np.int64)
    extra = max(1, int((sizes == 0).sum(axis=1).max())) if (sizes == 0).any() else 0
    perm_a, perm_w, slots = [], [], []
    for row, size in zip(tq.group_map, sizes):
        a_parts, w_parts = [], []
        padded = np.maximum(size, 1)
        padded[-1] += k + extra - int(padded.sum())  # the row's leftover slots go to the last group
        for group in range(g):
            members = np.nonzero(row == group)[0]
            fill = int(padded[group]) - len(members)
            a_parts.append(np.concatenate([members, np.zeros(fill, np.int64)]))
            w_parts.append(np.concatenate([members, np.full(fill, k, np.int64)]))
        perm_a.append(np.concatenate(a_parts))
        perm_w.append(np.concatenate(w_parts))
        slots.append(padded)
    return np.stack(perm_a).astype(np.int64), np.stack(perm_w).astype(np.int64), np.stack(slots).astype(np.int64)


def group_scalars(graph: gs.Graph, table: np.ndarray, step: gs.Tensor, name: str, dtype) -> list:
    """The step's row of a [T, G] table as G one-element tensors (one Gather, one Split)."""
    row = step_row(graph, table, step, name, [-1], dtype)
    count = np.asarray(table).shape[1]
    if count == 1:
        return [row]
    parts = [gs.Variable(f"{name}{g}", dtype=dtype) for g in range(count)]
    graph.nodes.append(gs.Node("Split", f"{name}/Split", attrs={"axis": 0, "num_outputs": count}, inputs=[row],
                               outputs=parts))
    return parts


# ---------------------------------------------------------------- integer product and epilogue

def integer_product(graph: gs.Graph, codes: gs.Tensor, weight: gs.Tensor, a_zero: gs.Tensor, w_zero: gs.Tensor,
                    name: str, meta: dict, metadata: dict) -> gs.Tensor:
    """MatMulInteger(u8 codes, s8 weights) -> int32 accumulators, its node annotated for verification."""
    acc = add_node(graph, "MatMulInteger", name, [codes, weight, a_zero, w_zero], f"{name}_output_0", dtype=np.int32)
    metadata[name] = dict(meta)
    return acc


def rescale(graph: gs.Graph, acc: gs.Tensor, a_scale: gs.Tensor, w_scale: gs.Tensor, name: str) -> gs.Tensor:
    """float32(acc) * (s_a * s_w): the pattern onnxruntime fuses into MatMulIntegerToFloat."""
    scale = add_node(graph, "Mul", f"{name}/scale", [a_scale, w_scale])
    as_float = add_node(graph, "Cast", f"{name}/Cast", [acc], attrs={"to": onnx.TensorProto.FLOAT})
    return add_node(graph, "Mul", f"{name}/Mul", [as_float, scale])


def add_all(graph: gs.Graph, parts: list, name: str) -> gs.Tensor:
    """One Sum node: reads every part once (a chain of Adds would re-read the running total G - 1 times)."""
    return parts[0] if len(parts) == 1 else add_node(graph, "Sum", f"{name}/Sum", parts)


def correction_count(column_sums: np.ndarray, w_zero: np.ndarray) -> int:
    """Rows r needed so that r int8 rows can sum (minus r zero points) to any -column_sums entry:
    |sum_i d_in| <= r * (margin + |zw_n|) = 127 r."""
    margin = 127 - int(np.max(np.abs(w_zero.astype(np.int64))))
    if margin < 1:
        raise PassError("weight zero points of magnitude 127 leave no room for zero-point correction rows")
    return max(1, int(np.ceil(np.max(np.abs(column_sums)) / margin)))


def correction_rows(column_sums: np.ndarray, w_zero: np.ndarray, r: int) -> np.ndarray:
    """column_sums [..., N] = sum_k (w_kn - zw_n) -> d [..., r, N] int8 with sum_i (d_in - zw_n) = -column_sums
    (r >= correction_count). The batched lowering computes the same rows at run time
    (lower_batched.correction_rows_of)."""
    zw = w_zero.astype(np.int64)
    target = -column_sums.astype(np.int64) + r * zw
    d = (target[..., None, :] + np.arange(r)[:, None]) // r        # Hermite: sum_i floor((t + i) / r) = t
    if d.min() < -128 or d.max() > 127:
        raise PassError("internal: zero-point correction rows do not fit int8")
    return d.astype(np.int8)


def zero_point_rows(w_int: np.ndarray, w_zero: np.ndarray) -> np.ndarray:
    """Weight rows that make per-row activation zero points exact inside one MatMulInteger.

    With codes a (zero point 0 in the op) and per-row zero points z_m, acc = sum_k (a_mk - z_m)(w_kn - zw_n)
    = sum_k a_mk (w_kn - zw_n) - z_m * cs_n, cs_n = sum_k (w_kn - zw_n). Appending r columns holding z_m to A
    and r int8 rows d to W with sum_i (d_in - zw_n) = -cs_n adds exactly -z_m * cs_n (correction_rows).
    w_int [K, N] int, w_zero [N] -> d [r, N] int8."""
    cs = w_int.astype(np.int64).sum(axis=0) - w_int.shape[0] * w_zero.astype(np.int64)
    return correction_rows(cs, w_zero, correction_count(cs, w_zero))


def im2col_nhwc(graph: gs.Graph, codes: gs.Tensor, pad_value: gs.Tensor | None, kernel, strides, pads, dilations,
                prefix: str, axes=(1, 2)) -> gs.Tensor:
    """uint8 NHWC codes [B, H, W, C] -> patches [B, Ho, Wo, kh*kw*C] (tap-major, channels inner); padding with
    the zero-point code, so padded taps add (z - z) * w = 0 like the convolution's zero padding. `axes`: the
    spatial axes (channels are always last; [G, B, H, W, C] codes of batched groups come padded: pads all 0)."""
    kh, kw = kernel
    top, left, bottom, right = pads
    if any(pads):
        codes = add_node(graph, "Pad", f"{prefix}/Pad",
                         [codes, constant(f"{prefix}/pads", _i64([0, top, left, 0, 0, bottom, right, 0])), pad_value],
                         dtype=np.uint8)
    if (kh, kw) == (1, 1) and tuple(strides) == (1, 1):
        return codes
    # tap (i, j) reads rows i*d, i*d + s, ... up to P - d*(k-1-i) (exclusive), i.e. Ho rows: constant Slice inputs
    axes, steps = constant(f"{prefix}/axes", _i64(list(axes))), constant(f"{prefix}/steps", _i64(list(strides)))
    taps = []
    for i in range(kh):
        for j in range(kw):
            start = _i64([i * dilations[0], j * dilations[1]])
            back = [dilations[0] * (kh - 1 - i), dilations[1] * (kw - 1 - j)]
            end = _i64([-b if b else INT64_MAX for b in back])
            taps.append(add_node(graph, "Slice", f"{prefix}/tap{i}{j}",
                                 [codes, constant(f"{prefix}/start{i}{j}", start), constant(f"{prefix}/end{i}{j}", end),
                                  axes, steps], dtype=np.uint8))
    return taps[0] if len(taps) == 1 else add_node(graph, "Concat", f"{prefix}/Concat", taps, dtype=np.uint8,
                                                   attrs={"axis": -1})


def with_zero_point_columns(graph: gs.Graph, codes: gs.Tensor, zero_rows: gs.Tensor, r: int, prefix: str) -> gs.Tensor:
    """[B, M, K] uint8 codes -> [B, M, K + r]: r columns holding each row's zero point (see zero_point_rows)."""
    prefix = f"{prefix}/zero_point_columns"
    shape = add_node(graph, "Shape", f"{prefix}/Shape", [codes], dtype=np.int64)
    rows = add_node(graph, "Slice", f"{prefix}/rows", [shape, constant(f"{prefix}/r_s", _i64([0])),
                                                       constant(f"{prefix}/r_e", _i64([2]))], dtype=np.int64)
    zshape = add_node(graph, "Concat", f"{prefix}/zshape", [rows, constant(f"{prefix}/r", _i64([r]))],
                      dtype=np.int64, attrs={"axis": 0})
    zcol = add_node(graph, "Reshape", f"{prefix}/zcol", [zero_rows, constant(f"{prefix}/zcol_shape", _i64([1, -1, 1]))],
                    dtype=np.uint8)
    zcols = add_node(graph, "Expand", f"{prefix}/zcols", [zcol, zshape], dtype=np.uint8)
    return add_node(graph, "Concat", f"{prefix}/with_zero_points", [codes, zcols], dtype=np.uint8, attrs={"axis": -1})


def split_groups(graph: gs.Graph, tensor: gs.Tensor, sizes: gs.Tensor, axis: int, count: int, name: str, dtype):
    parts = [gs.Variable(f"{name}{g}", dtype=dtype) for g in range(count)]
    graph.nodes.append(gs.Node("Split", f"{name}/Split", attrs={"axis": axis}, inputs=[tensor, sizes], outputs=parts))
    return parts


def weight_tensor(graph: gs.Graph, name: str, w: np.ndarray) -> gs.Tensor:
    """An int8 weight matrix for MatMulInteger. Codes that fit 4 bits (W4 recipes) are stored as packed INT4 (the
    file stays as small as the QDQ graph's) and widened by a Cast, which onnxruntime folds at session start."""
    w = np.ascontiguousarray(w, dtype=np.int8)
    if w.size < 2 or w.min() < -8 or w.max() > 7:
        return constant(name, w)
    flat = (w.reshape(-1).astype(np.uint8) & 0x0F)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    packed = (flat[0::2] | (flat[1::2] << 4)).tobytes()
    proto = onnx.helper.make_tensor(name, onnx.TensorProto.INT4, list(w.shape), vals=packed, raw=True)
    return add_node(graph, "Cast", f"{name}/Cast", [gs.Constant(name, LazyValues(proto))], dtype=np.int8,
                    attrs={"to": onnx.TensorProto.INT8})
