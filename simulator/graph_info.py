"""Static analysis of a compiled graph: its quantizers, integer weights and quantized matrix products.

Used by `check` (target conformance, worst-case accumulators) and by `verify` (which tensors carry
codes to compare). Everything is read from the graph structure and the compiled-graph contract
(node metadata dgq.module/role/bits/axis, [T, G] tables, group maps); nothing is executed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from passes.contract import (LOWERED_INPUT, NARROW_BITS, SIGNED_TYPES, GROUP_MAP, SCALE_TABLE, ZERO_POINT_TABLE,
                              QUANTIZE_DEQUANTIZE_LOG, QuantizerRecord, is_dequantizer_node, is_quantizer_node,
                              is_split_add, node_props, per_index_param)
from passes.graph_query import GraphIndex

LAYOUT_OPS = {"Reshape", "Transpose", "Slice", "Concat", "Identity", "Cast", "Unsqueeze", "Squeeze", "Flatten"}


@dataclass
class Quantizer:
    """One activation quantization point (QuantizeLinear or dgq.QuantizeLog)."""
    node: str
    quantizer: str                # uniform | log2
    module: str
    role: str
    bits: int
    axis: str                     # tensor | channel | pixel
    groups: int
    signed: bool
    code_tensor: str              # the codes as they enter the dequantizer (after Clip)
    code_type: int                # ONNX element type of the codes
    scale_source: str             # constant | computed (gathered per step) | dynamic (max at run time)
    symmetric: bool               # every zero point is 0
    steps: int = 1
    per_step_maps: bool = False   # group map differs between steps
    dequantizer: str = ""
    flip_symmetric: bool = False  # symmetric once on the grid of the other sign (symmetric_on_other_sign)


@dataclass
class WeightQuant:
    node: str                     # the DequantizeLinear
    tensor: str
    bits: int
    signed: bool
    symmetric: bool
    per_channel: bool
    flip_symmetric: bool = False  # symmetric once on the grid of the other sign (symmetric_on_other_sign)


@dataclass
class QuantMatmul:
    node: str
    op_type: str
    operands: list                # [Quantizer | WeightQuant | None] x 2
    reduction: int | None = None  # K, when known
    kernel: tuple[int, int] = (1, 1)
    fp_branch: bool = False       # one operand mixes floating-point rows (<start> token)


@dataclass
class GraphInfo:
    quantizers: list[Quantizer] = field(default_factory=list)
    weights: list[WeightQuant] = field(default_factory=list)
    matmuls: list[QuantMatmul] = field(default_factory=list)
    split_adds: list[str] = field(default_factory=list)      # FP <start> branches added to the quantized product
    pixel_kxk: dict = field(default_factory=dict)            # quantizer node -> kxk conv nodes it feeds (pixel groups)


def symmetric_on_other_sign(zero_point, bits: int, signed: bool) -> bool:
    """Whether every zero point is the other grid's zero: a b-bit code q on an unsigned grid is q - 2^(b-1) on the
    signed grid of the same values (and back), so uint8 with zero point 128 is int8 with zero point 0 (flip the top
    bit). check.py uses it to judge the grid a target actually runs, whichever sign the graph stores."""
    if zero_point is None:
        return False
    half = 1 << (bits - 1)
    return bool(np.all(np.asarray(zero_point).astype(np.int64) == (-half if signed else half)))


_TABLE_PATH = ("Gather", "Reshape", "Identity", "Unsqueeze", "Squeeze", "Cast")
_SCALE_PATH = ("Reshape", "Expand", "ReduceMax", "Identity")


class _Graph(GraphIndex):
    """The graph index plus the two walks the contract needs: back to a table, back to a dequantizer."""

    def find_table(self, name, suffix, depth=8):
        """Walk back from a scale/zero-point tensor through Gather/Reshape to a `*suffix` initializer."""
        return next((t for t in self.walk_back(name, _TABLE_PATH, depth)
                     if t in self.initializers and t.endswith(suffix)), None)

    def source(self, tensor, depth=16):
        """Follow layout-only ops back to a DequantizeLinear / dgq.DequantizeLog; (node, fp_mixed) or (None, False)."""
        mixed = False
        for _ in range(depth):
            p = self.producer.get(tensor)
            if p is None:
                return None, False
            if is_dequantizer_node(p):
                return p, mixed
            if p.op_type not in LAYOUT_OPS:
                return None, False
            if p.op_type == "Concat":
                srcs = [self.source(i, depth - 1)[0] for i in p.input]
                if not any(srcs):
                    return None, False
                mixed = mixed or not all(srcs)
                tensor = p.input[next(i for i, s in enumerate(srcs) if s is not None)]
                continue
            tensor = p.input[0]
        return None, False


def analyse(model: onnx.ModelProto) -> GraphInfo:
    g = _Graph(model)
    info = GraphInfo()
    by_dq: dict[str, Quantizer | WeightQuant] = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in g.initializers:
            w = _weight(g, node)
            info.weights.append(w)
            by_dq[node.name] = w
        elif is_quantizer_node(node):
            q = _quantizer(g, node)
            if q is not None:
                info.quantizers.append(q)
                if q.dequantizer:
                    by_dq[q.dequantizer] = q
        elif node.op_type == "Add" and is_split_add(node.name):
            info.split_adds.append(node.name)
    by_codes = {q.code_tensor: q for q in info.quantizers}
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node_props(node).get(LOWERED_INPUT):  # the integer lowering
            found = _integer_product(g, node, by_codes)
            if found is not None:
                info.matmuls.append(found[0])
                info.weights.append(found[1])
            continue
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        operands, fp = [], False
        for i in (0, 1):
            src, mixed = g.source(node.input[i])
            operands.append(by_dq.get(src.name) if src is not None else None)
            fp = fp or mixed
        if not all(operands):
            continue
        mm = QuantMatmul(node.name, node.op_type, operands, fp_branch=fp)
        # the weight's shape from its initializer's dims: a real-size weight stays in the external data file
        weight = g.producer[node.input[1]].input[0] if node.input[1] in g.producer else None
        shape = [int(d) for d in g.initializers[weight].dims] if weight in g.initializers else None
        if node.op_type == "Conv" and shape is not None:
            mm.reduction = int(np.prod(shape[1:]))
            mm.kernel = (shape[2], shape[3])
            q = operands[0]
            if isinstance(q, Quantizer) and q.axis == "pixel" and mm.kernel != (1, 1):
                info.pixel_kxk.setdefault(q.node, []).append(node.name)
        elif shape is not None:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            mm.reduction = shape[1] if trans_b else shape[0]
        info.matmuls.append(mm)
    return info


def _weight(g: _Graph, dq) -> WeightQuant:
    t = g.initializers[dq.input[0]]
    bits = NARROW_BITS.get(t.data_type, 8 * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize)
    zp = g.array(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    scale = g.array(dq.input[1])
    signed = t.data_type in SIGNED_TYPES
    return WeightQuant(dq.name, dq.input[0], bits, signed,
                       symmetric=zp is None or not np.any(np.asarray(zp).astype(np.int64)),
                       per_channel=scale is not None and np.size(scale) > 1,
                       flip_symmetric=symmetric_on_other_sign(zp, bits, signed))


def _spelled_params(g: _Graph, node) -> tuple[str, str] | None:
    """(scale, zero point) tensors of a quantizer spelled out as Div(x, s) -> Round -> [Add z] -> QuantizeLinear(1, 0)
    (passes/lower_common.quantize_codes), or None when `node` is not one."""
    unit = g.array(node.input[1]) if len(node.input) > 1 else None
    if unit is None or np.asarray(unit).size != 1 or float(np.asarray(unit).reshape(-1)[0]) != 1.0:
        return None
    p = g.producer.get(node.input[0])
    zero = ""
    if p is not None and p.op_type == "Add":
        zero, p = p.input[1], g.producer.get(p.input[0])
    if p is None or p.op_type != "Round":
        return None
    p = g.producer.get(p.input[0])
    return (p.input[1], zero) if p is not None and p.op_type == "Div" else None


_PRODUCT_A_PATH = ("Transpose", "Slice", "Concat", "Gather", "Split", "Pad", "Reshape", "Expand", "Identity", "Clip")
_PRODUCT_B_PATH = ("Gather", "Split", "Reshape", "Cast", "Identity", "Transpose", "Concat")  # Concat: + correction rows


def _weight_initializer(g: _Graph, tensor: str, depth: int = 8) -> str | None:
    """The int8/int4 initializer a product's weight operand is read from: back through the data input of Gather /
    Split / Reshape / Cast / Transpose / Concat (not through permutation indices or shapes; a batched split-K weight
    is the permuted rows concatenated with zero-point correction rows, passes/lower_batched.py)."""
    for _ in range(depth):
        t = g.initializers.get(tensor)
        if t is not None:
            return tensor if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.INT4) else None
        p = g.producer.get(tensor)
        if p is None or p.op_type not in _PRODUCT_B_PATH:
            return None
        tensor = p.input[0]
    return None


def _integer_product(g: _Graph, node, quantizers: dict) -> tuple[QuantMatmul, WeightQuant] | None:
    """A lowered MatMulInteger (u8 activation codes x int8/int4 weight initializer) as a quantized product: its
    activation quantizer (the QuantizeLinear its codes come from) and its weight (the initializer behind Gather /
    Split / Reshape / Cast). Reduction: the weight's rows (split-K products: the whole K, an upper bound)."""
    q = next((quantizers[t] for t in g.walk_back(node.input[0], _PRODUCT_A_PATH, 12) if t in quantizers), None)
    w = _weight_initializer(g, node.input[1])
    if q is None or w is None:
        return None
    t = g.initializers[w]
    bits = NARROW_BITS.get(t.data_type, 8 * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize)
    zp = g.array(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    signed = t.data_type in SIGNED_TYPES
    weight = WeightQuant(node.name, w, bits, signed,
                         symmetric=zp is None or not np.any(np.asarray(zp).astype(np.int64)), per_channel=True,
                         flip_symmetric=symmetric_on_other_sign(zp, bits, signed))
    mm = QuantMatmul(node.name, node.op_type, [q, weight], reduction=int(np.prod(list(t.dims)[:-1])) or None)
    return mm, weight


def _quantizer(g: _Graph, node) -> Quantizer | None:
    record = QuantizerRecord.from_node(node)
    is_log = node.op_type in ("QuantizeLog", QUANTIZE_DEQUANTIZE_LOG)
    fused = node.op_type == QUANTIZE_DEQUANTIZE_LOG  # a lowered graph's pair in one node: its own dequantizer
    code = node.output[0]
    clip_bits = None
    users = [] if fused else g.users(code)
    if len(users) == 1 and users[0].op_type == "Clip":
        hi = g.array(users[0].input[2]) if len(users[0].input) > 2 else None
        if hi is not None:
            clip_bits = int(np.ceil(np.log2(int(np.asarray(hi).reshape(-1)[0]) + 1)))
        code = users[0].output[0]
    deq = node if fused else next((u for u in g.users(code) if is_dequantizer_node(u)), None)
    if is_log:
        attr_bits = next((a.i for a in node.attribute if a.name == "bits"), 8)
        # dynamic: a maximum of the probabilities at run time (per sample: ReduceMax -> Reshape/Expand)
        reduced = any(g.producer[t].op_type == "ReduceMax" for t in g.walk_back(node.input[1], _SCALE_PATH, 6)
                      if t in g.producer)
        source = "dynamic" if reduced else ("constant" if g.array(node.input[1]) is not None else "computed")
        return Quantizer(node.name, "log2", record.module if record else "", record.role if record else "attn_probs",
                         record.bits if record else int(attr_bits), "tensor", 1, False, code, onnx.TensorProto.UINT8,
                         source, True, dequantizer=deq.name if deq is not None else "")
    # the parameters as the dequantizer reads them: the same tensors in a QDQ pair, and the real ones where a
    # lowering spelled the quantizer out as Div/Round/Add -> QuantizeLinear(1, 0) (passes/lower_axis_quantizers.py)
    params = deq if deq is not None and deq.op_type == "DequantizeLinear" else node
    scale_name = params.input[1]
    zp_name = params.input[2] if len(params.input) > 2 and params.input[2] else ""
    spelled = _spelled_params(g, node) if params is node else None
    if spelled is not None:  # an integer lowering's quantizer (no dequantizer): Div by s -> Round -> Add z
        scale_name, zp_name = spelled
    # the blocked form's parameters are the per-index vectors broadcast by an Expand: read the vectors
    scale_name = per_index_param(g.producer, scale_name)
    zp_name = per_index_param(g.producer, zp_name) if zp_name else ""
    zp_table = g.find_table(zp_name, ZERO_POINT_TABLE) if zp_name else None
    # the codes' type is the zero point's: read it from the [T, G] table when the zero point is gathered per step
    code_type = g.elem_type(zp_table or zp_name, onnx.TensorProto.UINT8) if zp_name else onnx.TensorProto.UINT8
    storage_bits = NARROW_BITS.get(code_type, 8 * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code_type)).itemsize)
    bits = record.bits if record else int(clip_bits or storage_bits)
    scale_table = g.find_table(scale_name, SCALE_TABLE)
    steps, groups = 1, 1
    if scale_table is not None:
        shape = list(g.initializers[scale_table].dims)
        steps, groups = (shape + [1, 1])[:2] if len(shape) == 2 else (shape[0], 1)
        source = "computed"
    else:
        source = "constant" if g.array(scale_name) is not None else "computed"
        scale = g.array(scale_name)
        groups = 1 if scale is None else int(np.unique(np.asarray(scale)).size)
    zp = g.array(zp_table) if zp_table else (g.array(zp_name) if zp_name else None)
    symmetric = zp is None or not np.any(np.asarray(zp).astype(np.int64))
    gmap_name = g.find_table(scale_name, GROUP_MAP)
    per_step = False
    if gmap_name is not None:
        gmap = g.array(gmap_name)
        per_step = gmap.shape[0] > 1 and not np.all(gmap == gmap[:1])
    axis = (record.axis if record else "") or ("tensor" if groups == 1 else "channel")
    return Quantizer(node.name, "uniform", record.module if record else "", record.role if record else "", bits, axis,
                     int(groups), code_type in SIGNED_TYPES, code, code_type, source, symmetric, int(steps), per_step,
                     dequantizer=deq.name if deq is not None else "",
                     flip_symmetric=symmetric_on_other_sign(zp, bits, code_type in SIGNED_TYPES))
