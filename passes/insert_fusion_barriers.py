"""Keep onnxruntime's weight fusions off the products they would get wrong: a Reshape between weight and op.

A default onnxruntime session rewrites DequantizeLinear(weight) -> MatMul (checked on 1.31, CPU):
- into MatMulIntegerToFloat when the other input is a DequantizeLinear output too. That kernel takes one
  activation scale and zero point: with per-channel or per-pixel activation parameters it fails at run time.
  With per-tensor parameters it is exact integer arithmetic, so those products keep the fusion (fast).
- into MatMulNBits when the other input is plain float. That kernel re-quantizes the activation to int8 in
  blocks (its default accuracy level), a rounding the recipe does not have (~0.5 % error on the product).
So every MatMul/Gemm whose activation input is not a per-tensor DequantizeLinear reads its dequantized weight
through a Reshape to the weight's own (constant) shape. Neither fusion looks through it, onnxruntime does not
constant-fold DequantizeLinear, and the integer simulator and `onnx.reference` read it as a layout op. Conv needs
nothing: its fusion (QLinearConv) requires a QuantizeLinear on the output, which compiled graphs never have.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant
from passes.contract import FUSION_BARRIER_SUFFIX as BARRIER_SUFFIX
FUSED_OPS = ("MatMul", "Gemm")


def _producer(tensor: gs.Tensor):
    return tensor.inputs[0] if isinstance(tensor, gs.Variable) and tensor.inputs else None


def _is_scalar(tensor: gs.Tensor) -> bool:
    """A 0-d tensor: a constant, a tensor of known shape [], or a Reshape to the constant shape []."""
    if isinstance(tensor, gs.Constant):
        return np.ndim(tensor.values) == 0
    if tensor.shape is not None:
        return len(tensor.shape) == 0
    node = _producer(tensor)
    return node is not None and node.op == "Reshape" and isinstance(node.inputs[1], gs.Constant) \
        and np.size(node.inputs[1].values) == 0


def is_per_tensor_dequantize(tensor: gs.Tensor) -> bool:
    """A DequantizeLinear output with one scale (and zero point) for the whole tensor."""
    node = _producer(tensor)
    if node is None or node.op != "DequantizeLinear" or node.attrs.get("block_size", 0):
        return False
    return all(_is_scalar(t) for t in node.inputs[1:3])


class InsertFusionBarriers(Pass):
    name = "insert_fusion_barriers"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        for node in list(graph.nodes):
            if node.op not in FUSED_OPS or len(node.inputs) < 2:
                continue
            weight = node.inputs[1]
            dq = _producer(weight)
            if dq is None or dq.op != "DequantizeLinear" or not isinstance(dq.inputs[0], gs.Constant):
                continue
            if is_per_tensor_dequantize(node.inputs[0]):
                continue
            shape = constant(f"{node.name}{BARRIER_SUFFIX}/shape", np.asarray(dq.inputs[0].shape, dtype=np.int64))
            node.inputs[1] = add_node(graph, "Reshape", f"{node.name}{BARRIER_SUFFIX}", [weight, shape])
        return graph
