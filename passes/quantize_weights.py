"""Weights to integers: INT8 (or packed INT4) initializers + DequantizeLinear per output channel.

w -> q = clamp(round_half_even(w / s) + z, -2^(b-1), 2^(b-1) - 1) in float32 (or the recipe's own codes, when
reconstruction learned the rounding), stored as `<w>_quantized`
(with `<w>_scale` float32 [C_out] and `<w>_zero_point` of the same integer type), and
DequantizeLinear(axis = output-channel axis) feeds the op. The fp32 weight leaves the graph, so the
file on disk holds b bits per weight.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from passes.base import Pass, PassContext, QuantRecord, add_node, nodes_by_name
from passes.contract import weight_names
from passes.errors import PassError
from passes.patterns import match_weighted_op


def quantize_weight_array(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Signed per-channel codes (int8 array, values within the b-bit signed range)."""
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape)
    z = zero_point.astype(np.float32).reshape(shape)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = np.round(w.astype(np.float32, copy=False) / s)  # numpy rounds half to even, like the contract
    q += z
    np.clip(q, lo, hi, out=q)
    return q.astype(np.int8)


def recipe_codes(tq, shape, axis: int, module: str) -> np.ndarray | None:
    """The recipe's own codes (learned rounding), in the graph weight's layout; None: round from the fp32 weight.
    Codes are stored in the torch layout [C_out, ...]; a MatMul / Gemm(transB=0) weight is [K, C_out]."""
    codes = getattr(tq, "codes", None)
    if codes is None:
        return None
    if axis == 1 and codes.ndim == 2:
        codes = codes.T
    if tuple(codes.shape) != tuple(shape):
        raise PassError(f"recipe ({module}, weight) has codes of shape {list(tq.codes.shape)}, the graph's weight is "
                        f"{list(shape)} (recipe for another model?)")
    return np.ascontiguousarray(codes, dtype=np.int8)


def pack_int4(codes: np.ndarray) -> bytes:
    """ONNX INT4 layout: two values per byte, the first in the low nibble."""
    flat = (codes.reshape(-1).astype(np.uint8) & 0x0F)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def integer_constant(name: str, codes: np.ndarray, bits: int) -> gs.Constant:
    if bits > 4:
        return gs.Constant(name, np.ascontiguousarray(codes.astype(np.int8)))
    proto = onnx.helper.make_tensor(name, onnx.TensorProto.INT4, list(codes.shape), vals=pack_int4(codes), raw=True)
    return gs.Constant(name, LazyValues(proto))


class QuantizeWeights(Pass):
    name = "quantize_weights"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        by_name = nodes_by_name(graph)
        for entry in ctx.module_map:
            tq = ctx.entry(entry.module, "weight")
            if tq is None or entry.kind not in ("conv", "linear"):
                continue
            node = by_name.get(entry.node)
            if node is None:
                raise PassError(f"module-map node {entry.node!r} ({entry.module}) is not in the graph")
            op = match_weighted_op(node)
            if tq.scale.shape[0] != op.out_channels:
                raise PassError(f"recipe ({entry.module}, weight) has {tq.scale.shape[0]} channel scales, the graph's "
                                f"weight {op.weight.name!r} has {op.out_channels} output channels (recipe for another model?)")
            storage_bits = 4 if tq.bits <= 4 else 8
            # read without caching the fp32 array in the graph: the old weight leaves the graph below
            values = op.weight._values
            w = values.load() if isinstance(values, LazyValues) else values
            codes = recipe_codes(tq, w.shape, op.out_axis, entry.module)
            if codes is None:
                codes = quantize_weight_array(w, tq.scale, tq.zero_point, tq.bits, op.out_axis)
            base = op.weight.name
            names = weight_names(base)
            q = integer_constant(names["quantized"], codes, storage_bits)
            s = gs.Constant(names["scale"], tq.scale.astype(np.float32))
            z = integer_constant(names["zero_point"], tq.zero_point.astype(np.int8), storage_bits)
            dq = add_node(graph, "DequantizeLinear", names["node"], [q, s, z], names["dequantized"],
                          attrs={"axis": op.out_axis})
            dq.shape = list(w.shape)
            node.inputs[1] = dq
            del w, codes
            ctx.records.append(QuantRecord(entry.module, "weight", "uniform", tq.bits, "out_channel", op.out_channels,
                                           base, names["node"], op.out_axis, tq,
                                           storage="int4" if storage_bits == 4 else "int8"))
        return graph
