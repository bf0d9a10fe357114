"""MixDQ's BOS-aware text-embedding quantizer: the input of a cross-attention's to_k/to_v with token row 0 FP.

For a recipe entry (module, input) with exclude_bos (the text embedding `encoder_hidden_states` [B, N, C] read by
attn2.to_k / attn2.to_v):

    x -> Slice_bos (token 0, FP) ----------------------------\
      -> Slice_rest (tokens 1..) -> QDQ (the entry's grid) -> Concat (token axis) -> the projection

so the projection's rows 1.. are integer products and row 0, the <start> token (identical for every prompt under
a causal CLIP encoder, and an outlier by orders of magnitude), is the FP side branch the simulator and the cost
model count apart. Only this module's edge is rewired (to_k and to_v each get their own split and grid). Token
groups (axis pixel) cover tokens 1.. at their fixed length: text tokens are never resampled.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, nodes_by_name, step_index_tensor
from passes.contract import bos_row_names, node_prefix
from passes.errors import PassError
from passes.qdq import INT64_MAX, slice_axis, uniform_qdq


class QuantizeTextEmbedding(Pass):
    name = "quantize_text_embedding"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        by_name = nodes_by_name(graph)
        step = None
        for entry in ctx.module_map:
            tq = ctx.entry(entry.module, "input")
            if tq is None or not tq.exclude_bos or entry.kind not in ("conv", "linear"):
                continue
            node = by_name[entry.node]
            x = node.inputs[0]
            if node.op != "MatMul" or not _reads_graph_input(graph, x):
                raise PassError(f"recipe ({entry.module}, input) keeps the <start> row FP, but {entry.node!r} does not "
                                "read the text embedding (a graph input [B, N, C]) through a MatMul")
            step = step or step_index_tensor(graph)
            names = bos_row_names(node_prefix(entry.module, "input"))
            head = slice_axis(graph, x, -2, 0, 1, names["bos"])
            rest = slice_axis(graph, x, -2, 1, INT64_MAX, names["rest"])
            dq, record, meta = uniform_qdq(graph, rest, tq, "nlc", step)
            record.tensor, record.bos_split = x.name, True
            node.inputs[0] = add_node(graph, "Concat", names["join"], [head, dq], attrs={"axis": -2})
            ctx.records.append(record)
            ctx.node_metadata.update(meta)
        return graph


def _reads_graph_input(graph: gs.Graph, x: gs.Tensor) -> bool:
    """x is a graph input, or a Cast of one (the fp16 export casts the text embedding first)."""
    while x.inputs and x.inputs[0].op == "Cast":
        x = x.inputs[0].inputs[0]
    return not x.inputs and x in graph.inputs
