"""The fast variant (`dgq compile --target onnxruntime-cpu-fast`): per-tensor-quantized Convs and MatMul linears
as QLinearConv / QLinearMatMul, onnxruntime's fastest integer kernels.

They requantize their output to uint8, a rounding the recipe does not have: the output grid of each op and step
comes from calibrated output ranges (`ranges[module]` = [T, 2] (lo, hi), measured by the caller on the exact
lowering), y = DequantizeLinear(QLinear...(codes, ..., y_scale, y_zero)). The conv bias rides in the int32 bias
input (round(b / (s_a * s_w)), another small rounding). Grouped ops, Gemm and everything else keep the exact
lowering (lower_linear / lower_conv run after this pass and skip what it lowered).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant, nodes_by_name, step_index_tensor
from passes.lower_common import add_report_row, float_source, input_prefix, lowered_prefix, quantize_codes, step_row, weight_of

KERNELS = {"Conv": "QLinearConv u8xs8 (requantized output)", "MatMul": "QLinearMatMul u8xs8 (requantized output)"}


def output_grid(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, 2] (lo, hi) -> uint8 grid per step: scale [T, 1] float32, zero point [T, 1] (0 inside [lo, hi])."""
    lo = np.minimum(ranges[:, 0], 0.0)
    hi = np.maximum(ranges[:, 1], 0.0)
    scale = np.maximum(hi - lo, 1e-8) / 255.0
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    return scale.astype(np.float32)[:, None], zero.astype(np.uint8)[:, None]


class LowerQlinear(Pass):
    name = "lower_qlinear"

    def __init__(self, ranges: dict):
        self.ranges = ranges

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step = step_index_tensor(graph)
        by_name = nodes_by_name(graph)
        for entry in ctx.module_map:
            tq = ctx.entry(entry.module, "input")
            if entry.kind not in ("conv", "linear") or tq is None or tq.axis != "tensor" \
                    or ctx.entry(entry.module, "weight") is None or entry.module not in self.ranges:
                continue
            node = by_name[entry.node]
            if node.op not in KERNELS or (node.op == "Conv" and node.attrs.get("group", 1) != 1):
                continue
            prefix = lowered_prefix(entry.module)
            x = float_source(node.inputs[0], input_prefix(entry.module))
            wt = weight_of(node)
            s = step_row(graph, tq.scale, step, f"{prefix}/scale", [], np.float32)
            z = step_row(graph, tq.zero_point, step, f"{prefix}/zero_point", [], np.uint8)
            codes = quantize_codes(graph, x, s, z, tq.bits, None, prefix)
            y_scale_t, y_zero_t = output_grid(np.asarray(self.ranges[entry.module], np.float32))
            ys = step_row(graph, y_scale_t, step, f"{prefix}/y_scale", [], np.float32)
            yz = step_row(graph, y_zero_t, step, f"{prefix}/y_zero_point", [], np.uint8)
            w = constant(f"{prefix}/w", wt.codes)
            sw = constant(f"{prefix}/w_scale", wt.scale.astype(np.float32))
            zw = constant(f"{prefix}/w_zero_point", wt.zero_point.astype(np.int8))
            inputs = [codes, s, z, w, sw, zw, ys, yz]
            attrs = {}
            if node.op == "Conv":
                attrs = {k: v for k, v in node.attrs.items() if k in ("pads", "strides", "dilations", "kernel_shape")}
                if len(node.inputs) > 2 and node.inputs[2] is not None:   # int32 bias on the accumulator's grid
                    acc_scale = add_node(graph, "Mul", f"{prefix}/bias_scale", [s, sw])
                    ratio = add_node(graph, "Div", f"{prefix}/bias_ratio", [node.inputs[2], acc_scale])
                    rounded = add_node(graph, "Round", f"{prefix}/bias_round", [ratio])
                    inputs.append(add_node(graph, "Cast", f"{prefix}/bias_int32", [rounded], dtype=np.int32,
                                           attrs={"to": onnx.TensorProto.INT32}))
            q_out = add_node(graph, "QLinear" + node.op, f"{prefix}/QLinear{node.op}", inputs, dtype=np.uint8,
                             attrs=attrs)
            out = node.outputs[0]
            node.outputs.clear()
            graph.nodes.append(gs.Node("DequantizeLinear", f"{prefix}/DequantizeLinear", inputs=[q_out, ys, yz],
                                       outputs=[out]))
            add_report_row(ctx, {"module": entry.module, "node": entry.node, "op": node.op, "axis": tq.axis,
                                 "groups": 1, "kernel": KERNELS[node.op], "accumulators": 0, "output": out.name})
        graph.cleanup()
        return graph
