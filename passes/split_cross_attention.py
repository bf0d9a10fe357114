"""Cross-attention with the <start> token kept in full precision (attn_probs entries with exclude_bos).

    out = A[..., :1] @ V[..., :1, :]  (FP branch)  +  DQ(Q(A[..., 1:])) @ V[..., 1:, :]  (quantized branch)

summed by `dgq/<module>/split/Add` into the original A.V output tensor. The quantized branch keeps the
original A.V node name; the log scale is each sample's max of A[..., 1:] only. (k and v rows 0 stay FP by
insert_activation_qdq, from their own exclude_bos entries.)
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node
from passes.contract import node_prefix, split_prefix
from passes.errors import PassError
from passes.qdq import INT64_MAX, attention_targets, probs_qdq, slice_axis


class SplitCrossAttention(Pass):
    name = "split_cross_attention"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step, targets = attention_targets(graph, ctx, split=True)
        for tq, match in targets:
            if not match.cross:
                raise PassError(f"recipe ({tq.module}, attn_probs) has exclude_bos, but {tq.module} is a "
                                "self-attention (its keys do not come from encoder_hidden_states)")
            prefix = split_prefix(tq.module)
            a, v = match.av.inputs[0], match.av.inputs[1]
            a_bos = slice_axis(graph, a, -1, 0, 1, f"{prefix}/Slice_probs_bos")
            a_rest = slice_axis(graph, a, -1, 1, INT64_MAX, f"{prefix}/Slice_probs_rest")
            v_bos = slice_axis(graph, v, -2, 0, 1, f"{prefix}/Slice_v_bos")  # tokens: [B*H, N, D] or [B, H, N, D]
            v_rest = slice_axis(graph, v, -2, 1, INT64_MAX, f"{prefix}/Slice_v_rest")
            dq, record, meta = probs_qdq(graph, a_rest, tq, step, node_prefix(tq.module, "attn_probs"), match.q)
            record.tensor, record.bos_split = a.name, True
            fp_branch = add_node(graph, "MatMul", f"{prefix}/MatMul_bos", [a_bos, v_bos])
            out = match.av.outputs[0]
            quantized = gs.Variable(f"{prefix}/MatMul_rest_output_0", dtype=out.dtype)
            match.av.outputs[0] = quantized
            match.av.inputs[0], match.av.inputs[1] = dq, v_rest
            graph.nodes.append(gs.Node("Add", f"{prefix}/Add", inputs=[fp_branch, quantized], outputs=[out]))
            ctx.records.append(record)
            ctx.node_metadata.update(meta)
        return graph
