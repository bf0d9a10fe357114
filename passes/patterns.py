"""Pattern matching on onnx-graphsurgeon graphs: weighted ops and the attention subgraph.

Every matcher returns a small dataclass or raises PatternMismatch saying which node and why it does not match.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import PassContext, nodes_by_name
from passes.contract import SAMPLE_INPUT, is_compiler_node
from passes.errors import PassError, PatternMismatch
from passes.module_map import module_path

LAYOUT_OPS = ("Reshape", "Transpose", "Identity", "Cast", "Squeeze", "Unsqueeze")  # move data, never change values
SCORE_OPS = ("Mul", "Div", "Add", "Cast", "Identity", "Where")  # QK^T -> scale -> (mask) -> Softmax
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "Clip", "DequantizeLinear")  # value-preserving up to quantization


@dataclass
class WeightedOp:
    node: gs.Node
    weight: gs.Constant
    out_axis: int        # the weight's output-channel axis (DequantizeLinear axis)
    out_channels: int

    @property
    def input(self) -> gs.Tensor:
        return self.node.inputs[0]


def match_weighted_op(node: gs.Node) -> WeightedOp:
    """A Conv/Gemm/MatMul whose second input is a float32 constant weight."""
    if node.op not in WEIGHTED_OPS:
        raise PatternMismatch(f"node {node.name!r} is a {node.op}, not one of {', '.join(WEIGHTED_OPS)}")
    if len(node.inputs) < 2:
        raise PatternMismatch(f"{node.op} node {node.name!r} has no weight input")
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant):
        producer = weight.inputs[0].op if weight.inputs else "a graph input"
        raise PatternMismatch(f"{node.op} node {node.name!r}: weight {weight.name!r} is computed by {producer}, "
                              "not a constant initializer (already quantized?)")
    if np.dtype(weight.dtype) != np.float32:
        raise PatternMismatch(f"{node.op} node {node.name!r}: weight {weight.name!r} is {np.dtype(weight.dtype)}, "
                              "expected float32")
    shape = list(weight.shape)
    if node.op == "Conv":
        if len(shape) < 3:
            raise PatternMismatch(f"Conv node {node.name!r}: weight {weight.name!r} has shape {shape}, expected [O, I, k...]")
        axis = 0
    else:
        if len(shape) != 2:
            raise PatternMismatch(f"{node.op} node {node.name!r}: weight {weight.name!r} has shape {shape}, expected 2-D")
        axis = 0 if node.op == "Gemm" and node.attrs.get("transB", 0) else 1
    if len(weight.outputs) > 1:
        others = ", ".join(n.name for n in weight.outputs if n is not node)
        raise PatternMismatch(f"weight {weight.name!r} of {node.name!r} is shared with {others}; "
                              "each module needs its own weight to quantize")
    return WeightedOp(node, weight, axis, int(shape[axis]))


@dataclass
class AttentionMatch:
    module: str
    qk: gs.Node            # Q.K^T MatMul
    softmax: gs.Node
    av: gs.Node            # A.V MatMul
    probs: gs.Tensor       # A (A.V's first input)
    values: gs.Tensor      # V after the head split (A.V's second input), [B*heads, Nk, d]
    q: gs.Tensor           # to_q / to_k / to_v outputs [B, N, C_inner], before the head split
    k: gs.Tensor
    v: gs.Tensor
    cross: bool            # K/V come from a graph input (encoder_hidden_states)


def reads_text_tokens(graph: gs.Graph, x: gs.Tensor) -> bool:
    """Whether `x` is (a layout view of) a graph input other than the latent `sample`: encoder_hidden_states."""
    for _ in range(12):
        if not x.inputs:
            return x.name != SAMPLE_INPUT and x in graph.inputs
        if x.inputs[0].op not in LAYOUT_OPS:
            return False
        x = x.inputs[0].inputs[0]
    return False


def _producer(tensor: gs.Tensor):
    return tensor.inputs[0] if tensor.inputs else None


def _projection_output(start: gs.Tensor, module: str, name: str, qk_or_av: gs.Node) -> gs.Tensor:
    """Walk back from an attention operand through layout ops to the output of `<module>.<name>`."""
    tensor = start
    for _ in range(12):
        node = _producer(tensor)
        if node is None:
            break
        if node.op in ("MatMul", "Gemm", "Add") and module_path(node.name) == f"{module}.{name}":
            return tensor
        if node.op not in LAYOUT_OPS:
            raise PatternMismatch(f"operand {start.name!r} of {qk_or_av.name!r} comes from {node.op} node "
                                  f"{node.name!r}, not from {module}.{name} through layout ops")
        tensor = node.inputs[0]
    raise PatternMismatch(f"operand {start.name!r} of {qk_or_av.name!r} does not come from {module}.{name}")


def _source(tensor: gs.Tensor) -> gs.Tensor:
    """The tensor behind layout ops and inserted QDQ (what a projection really reads)."""
    for _ in range(12):
        node = _producer(tensor)
        inserted_qdq = node is not None and is_compiler_node(node.name) and node.op in QDQ_OPS
        if node is None or (node.op not in LAYOUT_OPS and not inserted_qdq):
            break
        tensor = node.inputs[0]
    return tensor


def _linear_of(output: gs.Tensor) -> gs.Node:
    node = _producer(output)
    while node.op == "Add":  # bias after the MatMul
        node = next(_producer(t) for t in node.inputs if _producer(t) is not None)
    return node


def match_attention(graph: gs.Graph, qk: gs.Node, av: gs.Node, module: str) -> AttentionMatch:
    """QK^T -> scale (-> mask) -> Softmax (-> Cast) -> A.V, with q/k/v from `<module>.to_q/to_k/to_v`."""
    if qk.op != "MatMul" or av.op != "MatMul":
        raise PatternMismatch(f"attention {module}: expected MatMul nodes, got {qk.op} {qk.name!r} and {av.op} {av.name!r}")
    tensor, softmax = qk.outputs[0], None
    for _ in range(6):
        users = [n for n in tensor.outputs if n.op != "Shape"]
        if len(users) != 1:
            raise PatternMismatch(f"attention {module}: scores {tensor.name!r} feed {len(users)} nodes, expected a "
                                  "single chain QK^T -> scale -> Softmax")
        user = users[0]
        if user.op == "Softmax":
            softmax = user
            break
        if user.op not in SCORE_OPS:
            raise PatternMismatch(f"attention {module}: QK^T {qk.name!r} reaches {user.op} node {user.name!r} "
                                  "before any Softmax (fused or unusual attention?)")
        tensor = user.outputs[0]
    if softmax is None:
        raise PatternMismatch(f"attention {module}: QK^T {qk.name!r} does not reach a Softmax")
    probs = av.inputs[0]
    tensor = probs
    while _producer(tensor) is not None and _producer(tensor) is not softmax and _producer(tensor).op in ("Cast", "Identity"):
        tensor = _producer(tensor).inputs[0]
    if _producer(tensor) is not softmax:
        raise PatternMismatch(f"attention {module}: A.V {av.name!r} does not read the Softmax {softmax.name!r} output")
    q = _projection_output(qk.inputs[0], module, "to_q", qk)
    k = _projection_output(qk.inputs[1], module, "to_k", qk)
    v = _projection_output(av.inputs[1], module, "to_v", av)
    # cross-attention: keys read a graph input (encoder_hidden_states) that the queries do not read
    k_source, q_source = _source(_linear_of(k).inputs[0]), _source(_linear_of(q).inputs[0])
    cross = k_source is not q_source and k_source.name in {t.name for t in graph.inputs}
    return AttentionMatch(module, qk, softmax, av, probs, av.inputs[1], q, k, v, cross)


def attention_matches(graph: gs.Graph, ctx: PassContext) -> dict:
    """module -> AttentionMatch for every attention module the module map lists (matched once, then cached in
    the context, so passes that rewire an attention later still see its FP structure)."""
    if ctx.attention is not None:
        return ctx.attention
    by_name = nodes_by_name(graph)
    pairs: dict[str, dict] = {}
    for e in ctx.module_map:
        if e.kind in ("attn_qk", "attn_av"):
            pairs.setdefault(e.module, {})[e.kind] = by_name.get(e.node)
    out = {}
    for module, pair in pairs.items():
        if pair.get("attn_qk") is None or pair.get("attn_av") is None:
            raise PassError(f"attention {module}: the module map lists its matmuls but the graph lacks them")
        out[module] = match_attention(graph, pair["attn_qk"], pair["attn_av"], module)
    ctx.attention = out
    return out


def matched_attention(graph: gs.Graph, ctx: PassContext, module: str) -> AttentionMatch:
    """The attention of `module` whose probabilities the recipe quantizes."""
    matches = attention_matches(graph, ctx)
    if module not in matches:
        raise PassError(f"recipe quantizes the attention probabilities of {module}, but the graph has no "
                        "MatMul -> Softmax -> MatMul attention there (exported with fused attention?)")
    return matches[module]
