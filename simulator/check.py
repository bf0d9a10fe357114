"""Target conformance of a compiled graph, and a worst-case accumulator-overflow analysis.

    report = check_graph("unet.onnx", "tensorrt-int8", latent_size=16)
    report.violations      # [Violation(node, rule, asks, allows)]
    report.accumulators    # [AccumulatorBound(node, reduction, operand bits, worst-case bits, available)]

Worst case: an accumulator of K products with |a| <= A, |b| <= B holds at most K*A*B, which needs
ceil(log2(K*A*B + 1)) + 1 bits (sign). A = 2^b - 1 for a b-bit uniform grid (codes minus zero point),
2^S for log-coded attention probabilities under shift-and-add with maximum shift S.

Grids are judged as the target runs them, not by storage type: int8 codes with zero point 0 are uint8 codes with zero
point 128 (the top bit flipped), which an unsigned target with zero points runs (_grid_as_run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from passes.contract import LOG_DOMAIN
from simulator.errors import SimulatorError
from simulator.graph_info import GraphInfo, Quantizer, analyse
from simulator.targets import Target, load_target


@dataclass(frozen=True)
class Violation:
    node: str
    rule: str
    asks: str
    allows: str


@dataclass(frozen=True)
class AccumulatorBound:
    node: str
    op_type: str
    reduction: int | None
    operand_bits: tuple[int, int]     # magnitude bits of |a| and |b|
    worst_bits: int | None            # bits the worst-case accumulator needs (with sign)
    available_bits: int
    shift_add: bool = False

    @property
    def may_overflow(self) -> bool:
        return self.worst_bits is not None and self.worst_bits > self.available_bits


@dataclass
class CheckReport:
    target: str
    graph: str
    violations: list[Violation] = field(default_factory=list)
    accumulators: list[AccumulatorBound] = field(default_factory=list)
    info: GraphInfo | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_rule(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.violations:
            counts[v.rule] = counts.get(v.rule, 0) + 1
        return counts


INLINE_ELEMENTS = 4_000_000  # external tensors up to this size are loaded; bigger ones (weights) stay in the file


def load_for_analysis(path: str | Path) -> onnx.ModelProto:
    """The graph with small tensors (tables, scales, zero points) loaded and big weights left external
    (the analysis reads only their dims)."""
    path = Path(path)
    if not path.is_file():
        raise SimulatorError(f"graph {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise SimulatorError(f"graph {str(path)!r} is not a readable ONNX model: {exc}") from None
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for t in model.graph.initializer:
        if uses_external_data(t) and int(np.prod(t.dims)) <= INLINE_ELEMENTS:
            load_external_data_for_tensor(t, str(path.parent))
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
    return model


def _fmt_list(values) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def _magnitude_bits(x: int) -> int:
    return max(1, math.ceil(math.log2(x + 1)))


def _grid_as_run(q, allowed) -> tuple[str, bool] | None:
    """(grid, symmetric) a target runs a quantizer's or weight's codes as, or None when it cannot: the grid as stored,
    or else the other sign's grid of the same values (codes and zero points shifted by 2^(b-1): int8 with zero
    point 0 is uint8 with zero point 128, the top bit flipped), so a check judges the grid and not its storage type.
    `allowed`: the target's activations or weights (grids, symmetric_only)."""
    own, other = ("signed", "unsigned") if q.signed else ("unsigned", "signed")
    for grid, symmetric in ((own, q.symmetric), (other, q.flip_symmetric)):
        if grid in allowed.grids and (symmetric or not allowed.symmetric_only):
            return grid, symmetric
    return None


def check_graph(model: "onnx.ModelProto | str | Path", target: "Target | str", latent_size: int | None = None,
                batch: int = 2) -> CheckReport:
    target = load_target(target)
    graph_name = str(model) if isinstance(model, (str, Path)) else model.graph.name
    if isinstance(model, (str, Path)):
        model = load_for_analysis(model)
    info = analyse(model)
    report = CheckReport(target.name, graph_name, info=info)
    add = report.violations.append
    a, w, lq = target.activations, target.weights, target.log_quantizer

    for q in info.quantizers:
        if q.quantizer == "log2":
            if not lq.supported:
                add(Violation(q.node, "log quantizer", f"log2 quantizer ({q.bits}-bit) on {q.role}",
                              "no log quantizer"))
                continue
            if q.bits not in lq.bits:
                add(Violation(q.node, "log quantizer bits", f"{q.bits}-bit log codes", f"bits {_fmt_list(lq.bits)}"))
            if q.scale_source == "dynamic" and not lq.dynamic_scale:
                add(Violation(q.node, "log quantizer scale", "dynamic scale (max of the tensor at run time)",
                              "static scales only"))
            continue
        if q.bits not in a.bits:
            add(Violation(q.node, "activation bits", f"{q.bits}-bit grid", f"bits {_fmt_list(a.bits)}"))
        if _grid_as_run(q, a) is None:
            grid = "signed" if q.signed else "unsigned"
            if grid not in a.grids:
                add(Violation(q.node, "activation grid", f"{grid} codes", f"{_fmt_list(a.grids)} codes"))
            if a.symmetric_only and not q.symmetric:
                add(Violation(q.node, "activation zero point", "asymmetric (non-zero zero points)", "symmetric only"))
        if q.axis not in a.granularity:
            add(Violation(q.node, "activation granularity", f"group scales along {q.axis} (G={q.groups})",
                          f"{_fmt_list(a.granularity)}"))
        elif q.groups > a.max_groups:
            add(Violation(q.node, "activation groups", f"G={q.groups}", f"at most {a.max_groups}"))
        if q.scale_source not in a.scale_sources:
            asks = f"per-step scales gathered in the graph (T={q.steps})" if q.steps > 1 else "scales computed in the graph"
            add(Violation(q.node, "activation scale source", asks, f"{_fmt_list(a.scale_sources)} scales"))
        if q.per_step_maps and not a.per_step_group_maps:
            add(Violation(q.node, "group map", "a different group map per step", "one group map for all steps"))
        if q.node in info.pixel_kxk and not a.pixel_groups_kxk_conv:
            add(Violation(q.node, "pixel groups on kxk conv", f"pixel groups feeding {info.pixel_kxk[q.node][0]}",
                          "pixel groups only where each output reads one input pixel (Linear, 1x1 conv)"))

    for wq in info.weights:
        if wq.bits not in w.bits:
            add(Violation(wq.node, "weight bits", f"{wq.bits}-bit weights", f"bits {_fmt_list(w.bits)}"))
        if _grid_as_run(wq, w) is None:
            grid = "signed" if wq.signed else "unsigned"
            if grid not in w.grids:
                add(Violation(wq.node, "weight grid", f"{grid} weights", f"{_fmt_list(w.grids)} weights"))
            if w.symmetric_only and not wq.symmetric:
                add(Violation(wq.node, "weight zero point", "asymmetric weights (non-zero zero points)",
                              "symmetric only"))
        if wq.per_channel and not w.per_channel:
            add(Violation(wq.node, "weight granularity", "per-output-channel scales", "per-tensor scales"))

    if not target.fp_side_branch:
        for name in info.split_adds:
            add(Violation(name, "fp side branch", "a floating-point <start>-token branch added to the integer product",
                          "no floating-point side branch"))

    reductions = _reductions(model, info, latent_size, batch)
    for mm in info.matmuls:
        k = mm.reduction or reductions.get(mm.node)
        bits = []
        shift_add = False
        for op in mm.operands:
            if isinstance(op, Quantizer) and op.quantizer == "log2":
                shift_add = True
                bits.append(lq.max_shift + 1)
            else:
                bits.append(op.bits)
        mags = [(1 << b) - 1 if not (shift_add and i == 0) else 1 << lq.max_shift for i, b in enumerate(bits)]
        worst = _magnitude_bits(k * mags[0] * mags[1]) + 1 if k else None
        avail = lq.accumulator_bits if shift_add else target.accumulator_bits
        bound = AccumulatorBound(mm.node, mm.op_type, k, (_magnitude_bits(mags[0]), _magnitude_bits(mags[1])),
                                 worst, avail, shift_add)
        report.accumulators.append(bound)
        if bound.may_overflow:
            add(Violation(mm.node, "accumulator width",
                          f"worst case {worst} bits (K={k}, |a|<2^{bound.operand_bits[0]}, |b|<2^{bound.operand_bits[1]})",
                          f"{avail}-bit accumulator"))
    return report


def _reductions(model: onnx.ModelProto, info: GraphInfo, latent_size, batch) -> dict[str, int]:
    """Reduction lengths of the activation x activation products (attention), from symbolic shape inference."""
    todo = [mm for mm in info.matmuls if not mm.reduction]
    if not todo or not latent_size:
        return {}
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        m = shape_inference_view(model)
        for vi in m.graph.input:
            for d in vi.type.tensor_type.shape.dim:
                if d.dim_param:
                    value = batch if d.dim_param == "batch" else latent_size if d.dim_param in ("height", "width") else 1
                    d.ClearField("dim_param")
                    d.dim_value = value
        inferred = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    except Exception:  # noqa: BLE001 - shape inference is best effort; unknown K is reported as unknown
        return {}
    nodes = {n.name: n for n in model.graph.node}
    out = {}
    for mm in todo:
        shape = shapes.get(nodes[mm.node].input[0])
        if shape and shape[-1] > 0:
            out[mm.node] = int(shape[-1])
    return out


def shape_inference_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for shape inference: the log quantizer keeps its input's shape (an Identity), and the nodes that
    computed its scales, now dead, are dropped (onnxruntime's symbolic inference has no ReduceMax)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        if node.domain == LOG_DOMAIN:
            del node.input[1:]
            del node.attribute[:]
            node.op_type, node.domain = "Identity", ""
    del m.functions[:]
    _drop_dead_nodes(m.graph)
    return m


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs reach a graph output (in place)."""
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
