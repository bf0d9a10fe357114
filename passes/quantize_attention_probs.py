"""Quantize the attention probabilities (the A.V MatMul's first input) of every attention without a <start> split.

log2 entries: dgq.QuantizeLog -> dgq.DequantizeLog with S = ReduceMax(A) per call (dynamic) or the step's
calibrated scale; uniform entries (baselines): per-tensor QDQ from the [T, 1] tables. Entries with exclude_bos
are left to split_cross_attention.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, step_index_tensor
from passes.errors import PassError
from passes.insert_activation_qdq import attention_matches
from passes.qdq import log_qdq, uniform_qdq


def probs_qdq(graph: gs.Graph, a: gs.Tensor, tq, step: gs.Tensor, prefix: str | None = None):
    if tq.quantizer == "log2":
        return log_qdq(graph, a, tq, step, prefix)
    if tq.axis != "tensor":
        raise PassError(f"recipe ({tq.module}, attn_probs): uniform probabilities must be per tensor, got {tq.axis!r}")
    return uniform_qdq(graph, a, tq, "nlc", step, prefix)


def attention_entries(ctx: PassContext, split: bool) -> list:
    return [tq for tq in ctx.entries("attn_probs") if bool(tq.exclude_bos) == split]


def matched(graph: gs.Graph, ctx: PassContext, module: str):
    matches = attention_matches(graph, ctx)
    if module not in matches:
        raise PassError(f"recipe quantizes the attention probabilities of {module}, but the graph has no "
                        "MatMul -> Softmax -> MatMul attention there (exported with fused attention?)")
    return matches[module]


class QuantizeAttentionProbs(Pass):
    name = "quantize_attention_probs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        entries = attention_entries(ctx, split=False)
        if not entries:
            return graph
        step = step_index_tensor(graph)
        for tq in entries:
            match = matched(graph, ctx, tq.module)
            dq, record, meta = probs_qdq(graph, match.probs, tq, step)
            match.av.inputs[0] = dq
            ctx.records.append(record)
            ctx.node_metadata.update(meta)
        return graph
