"""Move the softmax scale of SDPA-exported attention from the operands of QK^T to its output.

torch's ONNX export of `scaled_dot_product_attention` (what optimum-cli produces for diffusers' default
attention processor) scales both operands, `MatMul(Mul(q, sqrt(s)), Mul(k^T, sqrt(s)))`, where diffusers'
`AttnProcessor` (our export) computes `Mul(MatMul(q, k^T), s)`. The two are the same product up to float
rounding; rewriting the first into the second lets q and k be quantized where the recipe measured them (the
projection outputs) and reach QK^T through layout ops only, as the other passes and the simulator expect.
Attention matmuls without scaled operands are left as they are.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node


def _scaled(tensor: gs.Tensor):
    """(x, s) when `tensor` = Mul(x, s) with s a scalar (a 0-d or 1-element tensor) read by nobody else."""
    node = tensor.inputs[0] if isinstance(tensor, gs.Variable) and tensor.inputs else None
    if node is None or node.op != "Mul" or len(tensor.outputs) != 1:
        return None
    x, s = node.inputs
    if isinstance(s, gs.Constant):
        return (x, s) if np.size(s.values) == 1 else None
    # SDPA's sqrt(scale) is computed from the head size at run time: a scalar Sqrt
    return (x, s) if s.inputs and s.inputs[0].op == "Sqrt" else None


class FoldAttentionScale(Pass):
    name = "fold_attention_scale"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        modules = {e.node for e in ctx.module_map if e.kind == "attn_qk"}
        for node in [n for n in graph.nodes if n.name in modules]:
            left, right = _scaled(node.inputs[0]), _scaled(node.inputs[1])
            if left is None or right is None:
                continue
            (q, s_q), (k, s_k) = left, right
            scores = node.outputs[0]
            node.inputs[0], node.inputs[1] = q, k
            raw = gs.Variable(f"{scores.name}/unscaled", dtype=scores.dtype)
            node.outputs[0] = raw
            scale = add_node(graph, "Mul", f"{node.name}/scale/Mul_scales", [s_q, s_k])
            graph.nodes.append(gs.Node("Mul", f"{node.name}/scale/Mul", inputs=[raw, scale], outputs=[scores]))
        graph.cleanup().toposort()
        return graph
