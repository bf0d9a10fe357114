"""Fuse every dgq.QuantizeLog -> dgq.DequantizeLog pair whose codes nothing else reads into one
dgq.QuantizeDequantizeLog node (the integer lowering's attention probabilities).

The lowered graph multiplies the dequantized probabilities in float (exact log2 A.V does not fit int32 at shift 40),
so the uint8 codes are only an intermediate: the pair costs about 27 element-wise passes over a [B*heads, N, N]
tensor, the fused function 9, with the same values bit for bit (passes/log_functions.py proves it; tests compare
every threshold). The fused node is named `{prefix}/QuantizeDequantizeLog`, keeps the QuantizeLog's metadata (the
quantizer record every reader parses) and writes the DequantizeLog's output tensor, so the A.V product and the
<start> branch read it unchanged. Its body reads float bits (BitCast, opset 26): the graph and every function of
the project's domain are declared at opset 26 (onnxruntime 1.31 runs and fuses such a lowered graph as it does at
opset 21: same optimised node counts on the embedded model's lowered DGQ and TFMQ-like graphs).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

from passes.base import Pass, PassContext
from passes.contract import DEQUANTIZE_LOG, LOG_DOMAIN, QUANTIZE_DEQUANTIZE_LOG, QUANTIZE_LOG
from passes.log_functions import FUSED_LOG_OPSET, quantize_dequantize_log_function

MIN_IR_VERSION = 13  # opset 26


def _pairs(graph: gs.Graph):
    """(QuantizeLog node, its only reader, a DequantizeLog with the same scale) of every fusable pair."""
    for node in graph.nodes:
        if node.domain != LOG_DOMAIN or node.op != QUANTIZE_LOG:
            continue
        codes = node.outputs[0]
        readers = list(codes.outputs)
        if len(readers) != 1 or codes in graph.outputs:
            continue
        dq = readers[0]
        if dq.domain == LOG_DOMAIN and dq.op == DEQUANTIZE_LOG and dq.inputs[1] is node.inputs[1]:
            yield node, dq


def _set_default_opset(owner, version: int) -> None:
    """A graph's or function's default-domain opset, in both places onnx-graphsurgeon exports it from."""
    owner.opset = version
    for entry in owner.import_domains or []:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version


def _declare_at_fused_opset(graph: gs.Graph) -> None:
    version = max(int(graph.opset or 0), FUSED_LOG_OPSET)
    _set_default_opset(graph, version)
    graph.ir_version = max(int(graph.ir_version or 0), MIN_IR_VERSION)
    for function in graph.functions:
        if function.domain == LOG_DOMAIN:
            _set_default_opset(function, version)
    if not any(f.domain == LOG_DOMAIN and f.name == QUANTIZE_DEQUANTIZE_LOG for f in graph.functions):
        graph.functions.append(OnnxImporter.import_function(quantize_dequantize_log_function(),
                                                            model_opset=graph.opset))


class FuseLogQuantizers(Pass):
    name = "fuse_log_quantizers"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        pairs = list(_pairs(graph))
        if not pairs:
            return graph
        _declare_at_fused_opset(graph)
        for q, dq in pairs:
            out = dq.outputs[0]
            dq.outputs.clear()
            name = q.name.rsplit("/", 1)[0] + "/" + QUANTIZE_DEQUANTIZE_LOG
            graph.nodes.append(gs.Node(QUANTIZE_DEQUANTIZE_LOG, name, attrs=dict(q.attrs), inputs=list(q.inputs),
                                       outputs=[out], domain=LOG_DOMAIN))
            q.outputs.clear()
            props = ctx.node_metadata.pop(q.name, None)
            if props is not None:
                ctx.node_metadata[name] = props
            for record in ctx.records:
                if record.node == q.name:
                    record.node = name
        graph.cleanup()
        return graph
