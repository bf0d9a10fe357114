"""Write every last-axis group quantizer in opset 21's blocked form, which onnxruntime runs fast.

onnxruntime's CPU QuantizeLinear loops a per-axis quantizer in blocks of the extent after the axis, one
thread-pool call per block: when the quantized axis is the tensor's last (channel groups of [B, N, C] and [B, C],
pixel groups of a flattened [B, C, H*W]) that is one call per element, ~10x slower than the blocked kernel on the
same numbers (benchmarks/ort_axis_quantize.py, benchmarks/qdq_graph_speed.py); its per-axis DequantizeLinear is
slower too. The blocked form (contract item 2, "Blocked form"):

    K   = the second-to-last extent of x, at run time (Shape)          e.g. N tokens of [B, N, C]
    S   = Expand(s[L], [..., ceil(K / BLOCK_SIZE), L])                  the per-index scale, repeated
    Z   = Expand(z[L], same shape)
    Q   = QuantizeLinear(x, S, Z, axis=-2, block_size=BLOCK_SIZE)        element [..., k, l] reads S[..., k // 64, l]
    DQ  = DequantizeLinear(codes, S, Z, axis=-2, block_size=BLOCK_SIZE)

S[..., k // 64, l] = s[l] for every k, so the codes and dequantized values are the per-axis form's bit for bit
(same division, rounding and saturation). The block size is a fixed attribute and the extent is computed from the
run-time shape, so the graph still runs at any resolution, and onnx.reference (which repeats each parameter
block_size times along the axis) holds parameters of at most max(K, 64) rows there. Quantizers whose axis is not
the last keep QuantizeLinear(axis): their per-axis blocks are whole rows (channels of [B, C, H, W], tokens of
[B, N, C]) and already fast. Not part of the integer lowering's pass list: lowered graphs spell their per-axis
quantizers out (lower_axis_quantizers).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant, nodes_by_name
from passes.contract import BLOCK_AXIS, BLOCK_SIZE, block_names


def blocked_shape(graph: gs.Graph, x: gs.Tensor, rank: int, prefix: str) -> gs.Variable:
    """x's run-time shape with its second-to-last extent K replaced by ceil(K / BLOCK_SIZE): (shape + c) // d with
    c = [0, .., BLOCK_SIZE - 1, 0] and d = [1, .., BLOCK_SIZE, 1] (three nodes: session start-up grows with nodes)."""
    p = block_names(prefix)["shape"]
    pad, block = np.zeros(rank, np.int64), np.ones(rank, np.int64)
    pad[-2], block[-2] = BLOCK_SIZE - 1, BLOCK_SIZE
    shape = add_node(graph, "Shape", f"{p}/Shape", [x], dtype=np.int64)
    padded = add_node(graph, "Add", f"{p}/round_up", [shape, constant(f"{p}/pad", pad)], dtype=np.int64)
    return add_node(graph, "Div", p, [padded, constant(f"{p}/block", block)], dtype=np.int64)


def block_pair(graph: gs.Graph, q: gs.Node, dequantizers: list[gs.Node], rank: int) -> None:
    """Rewrite one per-axis (last-axis) QuantizeLinear and the DequantizeLinear nodes reading its parameters."""
    prefix = q.name.rsplit("/", 1)[0]
    names = block_names(prefix)
    x, scale = q.inputs[0], q.inputs[1]
    zero = q.inputs[2] if len(q.inputs) > 2 else None
    shape = blocked_shape(graph, x, rank, prefix)
    blocked_scale = add_node(graph, "Expand", names["scale"], [scale, shape], dtype=scale.dtype)
    blocked_zero = add_node(graph, "Expand", names["zero_point"], [zero, shape], dtype=zero.dtype) \
        if zero is not None else None
    attrs = {"axis": BLOCK_AXIS, "block_size": BLOCK_SIZE}
    for node in [q] + dequantizers:
        node.inputs[1] = blocked_scale
        if blocked_zero is not None and len(node.inputs) > 2:
            node.inputs[2] = blocked_zero
        node.attrs.update(attrs)


class BlockAxisQuantizers(Pass):
    name = "block_axis_quantizers"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        by_name = nodes_by_name(graph)
        readers: dict[str, list[gs.Node]] = {}
        for node in graph.nodes:
            if node.op == "DequantizeLinear" and len(node.inputs) > 1:
                readers.setdefault(node.inputs[1].name, []).append(node)
        for record in ctx.records:
            q = by_name.get(record.node)
            if not record.last_axis_rank or q is None or q.op != "QuantizeLinear" or q.attrs.get("block_size", 0):
                continue
            dequantizers = [dq for dq in readers.get(q.inputs[1].name, []) if dq.attrs.get("axis") == q.attrs.get("axis")]
            block_pair(graph, q, dequantizers, record.last_axis_rank)
        return graph
