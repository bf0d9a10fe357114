"""Quantize the attention probabilities (the A.V MatMul's first input) of every attention without a <start> split.

log2 entries: dgq.QuantizeLog -> dgq.DequantizeLog with S = each sample's max of A (dynamic; qdq.sample_max) or the step's
calibrated scale; uniform entries (baselines): per-tensor QDQ from the [T, 1] tables. Entries with exclude_bos
are left to split_cross_attention.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext
from passes.qdq import attention_targets, probs_qdq


class QuantizeAttentionProbs(Pass):
    name = "quantize_attention_probs"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step, targets = attention_targets(graph, ctx, split=False)
        for tq, match in targets:
            dq, record, meta = probs_qdq(graph, match.probs, tq, step, batch_of=match.q)
            match.av.inputs[0] = dq
            ctx.records.append(record)
            ctx.node_metadata.update(meta)
        return graph
