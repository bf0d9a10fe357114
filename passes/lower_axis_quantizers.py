"""Spell out every per-axis QuantizeLinear of a lowered graph (the q, k, v quantizers of attention) in fast ops.

onnxruntime's per-axis QuantizeLinear is a scalar loop: 80 ms for a [2, 1024, 320] tensor on the project's machine,
against 0.5 ms for the same arithmetic as element-wise ops. The codes are the contract's (DESIGN.md section 4),
computed in the same float32 steps as QuantizeLinear and the simulator (simulator/ops/quantize_linear.py):

    r = x / s           Div, float32 (QuantizeLinear divides; it does not multiply by 1 / s)
    n = round(r)        Round: half to even, as QuantizeLinear rounds
    m = n + z           Add: exact (integer values; |n| >= 2^24 saturates either way)
    q = saturate(m)     QuantizeLinear(m, 1, 0) in the zero point's type: m / 1 and round are exact on integers

The final node keeps the original node's name and output, so its metadata (the quantizer record) and every
reader of the codes are unchanged; the DequantizeLinear after it (per-axis dequantization is fast) stays as it is.
Per-tensor QuantizeLinear nodes and those with a constant single-element scale are left alone.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant


def _i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _per_axis(node: gs.Node) -> bool:
    if node.op != "QuantizeLinear" or "axis" not in node.attrs or node.attrs.get("block_size", 0):
        return False
    scale = node.inputs[1]
    return not (isinstance(scale, gs.Constant) and scale.values.size == 1)


def _broadcast_shape(graph: gs.Graph, x: gs.Tensor, axis: int, prefix: str) -> gs.Tensor:
    """[-1, 1, ..., 1]: a per-axis [N] parameter reshaped to broadcast along `axis` of `x` (rank known or not)."""
    if axis < 0:
        return constant(f"{prefix}/param_shape", _i64([-1] + [1] * (-axis - 1)))
    tail = add_node(graph, "Shape", f"{prefix}/tail_shape", [x], dtype=np.int64, attrs={"start": axis + 1})
    count = add_node(graph, "Shape", f"{prefix}/tail_rank", [tail], dtype=np.int64)
    ones = add_node(graph, "ConstantOfShape", f"{prefix}/ones", [count], dtype=np.int64,
                    attrs={"value": onnx.helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1])})
    return add_node(graph, "Concat", f"{prefix}/param_shape", [constant(f"{prefix}/minus_one", _i64([-1])), ones],
                    dtype=np.int64, attrs={"axis": 0})


def spell_out(graph: gs.Graph, node: gs.Node) -> None:
    """Replace one per-axis QuantizeLinear by Div -> Round -> Add -> QuantizeLinear(1, 0) (same name, output)."""
    x, scale = node.inputs[0], node.inputs[1]
    zero = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] is not None else None
    out = node.outputs[0]
    code_dtype = np.int8 if zero is not None and zero.dtype == np.int8 else np.uint8
    prefix = f"{node.name}/spelled"
    shape = _broadcast_shape(graph, x, int(node.attrs["axis"]), prefix)
    s = add_node(graph, "Reshape", f"{prefix}/scale", [scale, shape])
    rounded = add_node(graph, "Round", f"{prefix}/Round", [add_node(graph, "Div", f"{prefix}/Div", [x, s])])
    if zero is not None:
        z = add_node(graph, "Cast", f"{prefix}/zero_float", [zero], attrs={"to": onnx.TensorProto.FLOAT})
        rounded = add_node(graph, "Add", f"{prefix}/AddZero",
                           [rounded, add_node(graph, "Reshape", f"{prefix}/zero", [z, shape])])
    node.outputs.clear()
    name = node.name
    node.name = f"{name}/replaced"
    graph.nodes.append(gs.Node("QuantizeLinear", name, inputs=[
        rounded, constant(f"{prefix}/unit_scale", np.array(1.0, np.float32)),
        constant(f"{prefix}/unit_zero", np.array(0, code_dtype))], outputs=[out]))


class LowerAxisQuantizers(Pass):
    name = "lower_axis_quantizers"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        for node in [n for n in graph.nodes if _per_axis(n)]:
            spell_out(graph, node)
        graph.cleanup()
        return graph
