"""Builders for the quantize/dequantize subgraphs the passes insert (compiled-graph contract, items 3-5).

Uniform: `[T, G]` scale and zero-point tables + group map are initializers; Gather(table, step index) ->
Reshape [G] -> Gather(., group map of the step) gives a per-index vector for QuantizeLinear/DequantizeLinear(axis).
Pixel groups: the map is defined on the calibrated grid and resampled to the run-time size inside the graph
(passes/pixel_groups.py), so a compiled graph runs at any resolution.
Log2: dgq.QuantizeLog / dgq.DequantizeLog with a dynamic scale, the maximum of each sample's probabilities
(`sample_max`: attention maps are [B*heads, N, M], a sample is `heads` consecutive rows), or a step-gathered
static scale.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import PassContext, QuantRecord, add_node, constant, step_index_tensor
from passes.contract import (DEQUANTIZE_LOG, GROUP_MAP, LOG_DOMAIN, QUANTIZE_LOG, SCALE_TABLE, ZERO_POINT_TABLE,
                              QuantizerRecord, node_prefix, table_name)
from passes.errors import PassError
from passes.log_functions import log_functions
from passes.patterns import matched_attention
from passes.pixel_groups import LevelGrid, group_index

# Where the channel and pixel axes of an activation are, by layout:
#   nchw: conv input [B, C, H, W]       channel 1, pixels flattened to one axis (h*W + w)
#   nlc:  tokens x channels [B, N, C]   channel 2, pixel (token) 1
#   nc:   [B, C] (time embedding)       channel 1, no pixel axis
CHANNEL_AXIS = {"nchw": 1, "nlc": 2, "nc": 1}
# (layout, axis) whose per-index axis is the last one of the tensor QuantizeLinear reads -> that tensor's rank
# (nchw pixels: the flattened [B, C, H*W]); passes/block_axis_quantizers.py writes these in the blocked form
LAST_AXIS_RANK = {("nchw", "pixel"): 3, ("nlc", "channel"): 3, ("nc", "channel"): 2}
INT64_MAX = np.iinfo(np.int64).max


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def step_gather(graph: gs.Graph, table: gs.Constant, step: gs.Tensor, prefix: str, what: str,
                shape, dtype) -> gs.Variable:
    """Row `step` of a [T, X] table, reshaped to `shape` ([-1] or [] for a scalar)."""
    row = add_node(graph, "Gather", f"{prefix}/{what}/Gather", [table, step], dtype=dtype, attrs={"axis": 0})
    return add_node(graph, "Reshape", f"{prefix}/{what}/Reshape", [row, constant(f"{prefix}/{what}/shape", _i64(shape))],
                    dtype=dtype)


def code_type(tq) -> type:
    """uint8 storage; an 8-bit grid whose zero points are all 128 is the signed symmetric grid (codes shifted by
    128, same values), stored as int8 with zero point 0, the form per-tensor INT8 compilers take."""
    signed = tq.bits == 8 and tq.zero_point.size and np.all(tq.zero_point == 128)
    return np.int8 if signed else np.uint8


def group_params(graph: gs.Graph, tq, prefix: str, step: gs.Tensor, resample: gs.Tensor | None = None):
    """(scale, zero point) tensors for one quantization point: scalars (G = 1, axis tensor) or per-index [N].
    `resample`: int64 indices into the map row (pixel_groups.group_index) giving the run-time pixels' groups."""
    codes = code_type(tq)
    zero_points = tq.zero_point - (128 if codes is np.int8 else 0)
    scale_table = constant(table_name(prefix, SCALE_TABLE), tq.scale.astype(np.float32))
    zero_table = constant(table_name(prefix, ZERO_POINT_TABLE), zero_points.astype(codes))
    if tq.axis == "tensor":
        return (step_gather(graph, scale_table, step, prefix, "scale", [], np.float32),
                step_gather(graph, zero_table, step, prefix, "zero_point", [], codes))
    scale_g = step_gather(graph, scale_table, step, prefix, "scale", [-1], np.float32)
    zero_g = step_gather(graph, zero_table, step, prefix, "zero_point", [-1], codes)
    # group maps are stored as uint8 (G <= 256; 1/8 of int64 on disk) and cast to int64 indices in the graph
    map_dtype = np.uint8 if tq.scale.shape[1] <= 256 else np.int32
    group_map = constant(table_name(prefix, GROUP_MAP), tq.group_map.astype(map_dtype))
    if tq.group_map.shape[0] == 1:  # one map shared by all steps
        row = add_node(graph, "Reshape", f"{prefix}/group_map/Reshape",
                       [group_map, constant(f"{prefix}/group_map/shape", _i64([-1]))], dtype=map_dtype)
    else:
        row = step_gather(graph, group_map, step, prefix, "group_map", [-1], map_dtype)
    if resample is not None:
        row = add_node(graph, "Gather", f"{prefix}/group_map/Resample", [row, resample], dtype=map_dtype,
                       attrs={"axis": 0})
    index = add_node(graph, "Cast", f"{prefix}/group_map/Cast", [row], dtype=np.int64,
                     attrs={"to": onnx.TensorProto.INT64})
    scale = add_node(graph, "Gather", f"{prefix}/scale/GatherGroups", [scale_g, index], attrs={"axis": 0})
    zero = add_node(graph, "Gather", f"{prefix}/zero_point/GatherGroups", [zero_g, index], dtype=codes,
                    attrs={"axis": 0})
    return scale, zero


def uniform_qdq(graph: gs.Graph, x: gs.Tensor, tq, layout: str, step: gs.Tensor, prefix: str | None = None,
                grid: LevelGrid | None = None) -> tuple[gs.Variable, QuantRecord, dict]:
    """Q (-> Clip) -> DQ of `x`; returns (dequantized tensor, record, Q node metadata).
    `grid`: a pixel map's calibrated level (pixel_groups.level_grid), resampled to `x`'s size at run time;
    None keeps the map's fixed length (token axes that are not pixels)."""
    prefix = prefix or node_prefix(tq.module, tq.role)
    if tq.axis == "pixel" and layout == "nc":
        raise PassError(f"({tq.module}, {tq.role}): pixel groups on a [B, C] tensor {x.name!r}, which has no pixel axis")
    resample = group_index(graph, grid, x, layout, prefix) if tq.axis == "pixel" and grid is not None else None
    scale, zero = group_params(graph, tq, prefix, step, resample)
    src, axis = x, None
    if tq.axis == "channel":
        axis = CHANNEL_AXIS[layout]
    elif tq.axis == "pixel":
        if layout == "nchw":  # [B, C, H, W] -> [B, C, H*W]: the grouped pixels on one axis
            src = add_node(graph, "Reshape", f"{prefix}/Reshape_in", [x, constant(f"{prefix}/flat_shape", _i64([0, 0, -1]))])
            axis = 2
        else:
            axis = 1
    attrs = {} if axis is None else {"axis": axis}
    q_name = f"{prefix}/QuantizeLinear"
    codes = add_node(graph, "QuantizeLinear", q_name, [src, scale, zero], dtype=code_type(tq), attrs=attrs)
    if tq.bits < 8:  # a b-bit grid in uint8 storage
        codes = add_node(graph, "Clip", f"{prefix}/Clip",
                         [codes, constant(f"{prefix}/clip_min", np.array(0, np.uint8)),
                          constant(f"{prefix}/clip_max", np.array(2 ** tq.bits - 1, np.uint8))], dtype=np.uint8)
    out = add_node(graph, "DequantizeLinear", f"{prefix}/DequantizeLinear", [codes, scale, zero], attrs=attrs)
    if src is not x:
        shape = add_node(graph, "Shape", f"{prefix}/Shape", [x], dtype=np.int64)
        out = add_node(graph, "Reshape", f"{prefix}/Reshape_out", [out, shape])
    meta = QuantizerRecord(tq.module, tq.role, "uniform", tq.bits, tq.axis).to_props()
    record = QuantRecord(tq.module, tq.role, "uniform", tq.bits, tq.axis, int(tq.scale.shape[1]), x.name, q_name,
                         axis, tq, last_axis_rank=LAST_AXIS_RANK.get((layout, tq.axis), 0))
    return out, record, {q_name: meta}


def ensure_log_functions(graph: gs.Graph) -> None:
    from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

    have = {(f.domain, f.name) for f in graph.functions}
    for proto in log_functions():
        if (proto.domain, proto.name) not in have:
            graph.functions.append(OnnxImporter.import_function(proto, model_opset=graph.opset))


def sample_max(graph: gs.Graph, a: gs.Tensor, batch_of: gs.Tensor, prefix: str) -> gs.Variable:
    """Each sample's maximum of an attention map `a`, shaped to broadcast against it: [B*heads, N, M] ->
    [B*heads, 1, 1] (a sample is `heads` consecutive rows), [B, heads, N, M] -> [B, heads, 1, 1]. B = dim 0 of
    `batch_of` (the attention's [B, N, C] query). Maxima over the last two axes, then over a sample's heads:
    exact, and a sample's scale does not depend on the rest of its batch (CFG's cond/uncond halves included)."""
    p = f"{prefix}/scale"
    rows = add_node(graph, "ReduceMax", f"{p}/ReduceMax", [a, constant(f"{p}/row_axes", _i64([-2, -1]))],
                    attrs={"keepdims": 1})                                        # [B*heads, 1, 1] / [B, heads, 1, 1]
    batch = add_node(graph, "Shape", f"{p}/Shape", [batch_of], dtype=np.int64, attrs={"start": 0, "end": 1})
    per_sample = add_node(graph, "Concat", f"{p}/Concat", [batch, constant(f"{p}/rest", _i64([-1]))],
                          dtype=np.int64, attrs={"axis": 0})
    heads = add_node(graph, "Reshape", f"{p}/Reshape", [rows, per_sample])        # [B, heads]
    peak = add_node(graph, "ReduceMax", f"{p}/ReduceMax_heads", [heads, constant(f"{p}/head_axes", _i64([1]))],
                    attrs={"keepdims": 1})                                        # [B, 1]
    spread = add_node(graph, "Expand", f"{p}/Expand",
                      [peak, add_node(graph, "Shape", f"{p}/Shape_heads", [heads], dtype=np.int64)])
    return add_node(graph, "Reshape", f"{p}/Reshape_rows",
                    [spread, add_node(graph, "Shape", f"{p}/Shape_rows", [rows], dtype=np.int64)])


def log_qdq(graph: gs.Graph, a: gs.Tensor, tq, step: gs.Tensor, prefix: str | None = None,
            batch_of: gs.Tensor | None = None) -> tuple[gs.Variable, QuantRecord, dict]:
    """dgq.DequantizeLog(dgq.QuantizeLog(A, S), S); S = each sample's max of A (dynamic; `batch_of`: a tensor
    whose dim 0 is the batch, see sample_max) or the step's calibrated scale."""
    prefix = prefix or node_prefix(tq.module, tq.role)
    ensure_log_functions(graph)
    if tq.dynamic:
        if batch_of is None:
            raise PassError(f"({tq.module}, {tq.role}): a dynamic log2 scale needs the attention's batch size")
        s = sample_max(graph, a, batch_of, prefix)
    else:
        table = constant(table_name(prefix, SCALE_TABLE), tq.scale.astype(np.float32))
        s = step_gather(graph, table, step, prefix, "scale", [], np.float32)
    q_name = f"{prefix}/QuantizeLog"
    codes = add_node(graph, QUANTIZE_LOG, q_name, [a, s], dtype=np.uint8, attrs={"bits": tq.bits}, domain=LOG_DOMAIN)
    out = add_node(graph, DEQUANTIZE_LOG, f"{prefix}/DequantizeLog", [codes, s], domain=LOG_DOMAIN)
    meta = QuantizerRecord(tq.module, tq.role, "log2", tq.bits, "tensor", bool(tq.dynamic)).to_props()
    record = QuantRecord(tq.module, tq.role, "log2", tq.bits, "tensor", 1, a.name, q_name, None, tq)
    return out, record, {q_name: meta}


def probs_qdq(graph: gs.Graph, a: gs.Tensor, tq, step: gs.Tensor, prefix: str | None = None,
              batch_of: gs.Tensor | None = None) -> tuple[gs.Variable, QuantRecord, dict]:
    """Quantize attention probabilities: log2 (DGQ), or per-tensor uniform (the baselines)."""
    if tq.quantizer == "log2":
        return log_qdq(graph, a, tq, step, prefix, batch_of)
    if tq.axis != "tensor":
        raise PassError(f"recipe ({tq.module}, attn_probs): uniform probabilities must be per tensor, got {tq.axis!r}")
    return uniform_qdq(graph, a, tq, "nlc", step, prefix)


def attention_targets(graph: gs.Graph, ctx: PassContext, split: bool) -> tuple[gs.Tensor | None, list]:
    """(the step index, [(attn_probs entry, its AttentionMatch)]) for the recipe's attention probabilities with
    (split=True) or without a <start>-token split; (None, []) when there are none."""
    entries = [tq for tq in ctx.entries("attn_probs") if bool(tq.exclude_bos) == split]
    if not entries:
        return None, []
    return step_index_tensor(graph), [(tq, matched_attention(graph, ctx, tq.module)) for tq in entries]


def slice_axis(graph: gs.Graph, x: gs.Tensor, axis: int, start: int, end: int, name: str) -> gs.Variable:
    return add_node(graph, "Slice", name, [x, constant(f"{name}/starts", _i64([start])),
                                           constant(f"{name}/ends", _i64([end])),
                                           constant(f"{name}/axes", _i64([axis]))], dtype=x.dtype or np.float32)
