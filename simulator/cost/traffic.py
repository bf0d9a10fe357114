"""Bytes moved and work done by each counted op of one UNet forward, for one configuration.

Notation: w, a = weight / activation bits of the configuration (32 = kept FP); G = activation groups;
A, B = the op's first / second operand (conv/linear: input activation / weight; QK^T: q / k;
A.V: probabilities / v); N = its output elements; K = keys of an attention op. Sizes are bits / 8,
rounded up per tensor (INT4 weights packed two per byte; 6-bit codes packed at 6 bits).

Operand widths ("at their code width, FP where the graph keeps FP"):
    conv / linear (quantized)   A at a bits, B at w bits
    conv_in / conv_out          A and B at 32 bits (DGQ keeps them FP)
    QK^T                        q and k at a bits; cross-attention: k row 0 (the <start> key) at 32 bits
    A.V                         log-coded probabilities and v at a bits; cross-attention: probability
                                column 0 and v row 0 (the <start> branch) at 32 bits
    outputs                     32 bits (every op's output is FP: a norm, softmax or add reads it next)
Quantization parameters read per UNet call (one step):
    weight scales               per output channel a float32 scale + a w-bit zero point (w < 32)
    scale table row             per activation point of the op, this step's G float32 scales + G a-bit
                                zero points (a < 32); the log-quantized probabilities have a dynamic
                                scale and read nothing
    group map                   per activation point, ceil(log2 G) bits per channel (G > 1); a per-step
                                map and the shared map cost the same per step
Fused softmax (a target option): QK^T's FP32 logits stay on chip (written and read back once: N x 4 B x 2 of
    on-chip traffic) and QK^T writes the probability codes instead (a bits; the <start> column in FP).
Split-K partial sums (a < 32, G > 1): channel groups split the contraction of a conv/linear/QK^T into G
    int32 partial sums per output (the simulator's semantics), each written and read back once for the
    rescale-and-add: N x G x 4 B x 2 of on-chip traffic (the output tile stays on chip). A.V accumulates
    its shift-adds in one sum (no partial sums).
Work, in MACs of the unit that runs it (`simulator.targets.hardware` precisions): operands of at most 4 /
8 / 16 bits on int4 / int8 / fp16 units, wider on fp32; log-coded A.V terms as shift-adds; the <start>
branch (K-th of QK^T and of A.V), the FP layers and every rescale (N x G for conv/linear/QK^T, N for A.V;
a fused multiply-add into the output) on fp32. This is the `exact` BOPs convention in MACs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulator.cost.bits import FULL_PRECISION_BITS as FP
from simulator.cost.bits import BitWidths
from simulator.cost.inventory import CountedOp, Inventory
from simulator.errors import SimulatorError

ACCUMULATOR_BYTES = 4    # int32 partial sums
OUTPUT_BITS = FP         # every counted op writes an FP output
SCALE_BITS = 32          # float32 scales
POINT_ROLES = {"conv": ("input",), "linear": ("input",), "attn_qk": ("q", "k"), "attn_av": ("v",), "other": ()}


def _bytes(elements: int, bits: int) -> int:
    return -(-elements * bits // 8)


def unit_for(*widths: int) -> str:
    """The precision of the unit that multiplies operands of these bit widths."""
    widest = max(widths)
    return "int4" if widest <= 4 else "int8" if widest <= 8 else "fp16" if widest <= 16 else "fp32"


@dataclass(frozen=True)
class OpTraffic:
    """One op's bytes (DRAM-compulsory: each tensor read or written once) and MACs by unit precision."""
    module: str
    kind: str                  # inventory kind; FP layers are `conv`/`linear` with full_precision
    full_precision: bool
    a_bytes: int               # first operand (activation input / q / probabilities), <start> part excluded
    b_bytes: int               # second operand (weight / k / v), <start> part excluded
    output_bytes: int
    qparam_bytes: int          # weight scales + this step's scale-table rows + group maps
    start_bytes: int           # the FP <start> branch's operands (k row 0; probability column 0 + v row 0)
    partial_sum_bytes: int     # on-chip only: split-K partial sums written and read back
    fused_logit_bytes: int     # on-chip only: a fused softmax's FP32 logits written and read back
    slices: int                # independent matmuls (batch x heads) the operands split into
    macs: dict = field(default_factory=dict)   # unit precision -> MACs (or shift-adds)

    @property
    def compulsory_bytes(self) -> int:
        return self.a_bytes + self.b_bytes + self.output_bytes + self.qparam_bytes + self.start_bytes

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


def _point_bytes(channels: list, act_bits: int, groups: int) -> int:
    """This step's scale-table rows and group maps of the activation points feeding one op."""
    if act_bits >= FP:
        return 0
    table = _bytes(groups, SCALE_BITS + act_bits) * len(channels)
    maps = sum(_bytes(c, math.ceil(math.log2(groups))) for c in channels) if groups > 1 else 0
    return table + maps


def op_traffic(op: CountedOp, bits: BitWidths, groups: int, point_channels: list,
               fused_softmax: bool = False, compiled: bool = False) -> OpTraffic:
    """Bytes and MACs of `op` at `bits` with G = `groups`; `point_channels`: channel counts of its points;
    `fused_softmax`: the target keeps QK^T's logits on chip and writes probability codes; `compiled`: a conv /
    linear at the widths its compiled graph gives it (MixDQ's per-layer allocation; `bits` where it gives
    none), its FP <start>-row MACs (a BOS-aware text embedding) on the fp32 unit."""
    if not isinstance(groups, int) or groups < 1:
        raise SimulatorError(f"groups must be a positive integer, got {groups!r}")
    quant_act = bits.quantized_activations
    macs: dict = {}

    def add(unit: str, count: int) -> None:
        if count:
            macs[unit] = macs.get(unit, 0) + count

    out_bytes = _bytes(op.outputs, OUTPUT_BITS)
    qparams = start = psums = fused = 0
    if op.kind in ("conv", "linear"):
        w, a = bits.weight, bits.activation
        if compiled:
            w, a = op.weight_bits or w, op.act_bits or a
        if op.full_precision:
            w = a = FP
        fp_macs = op.fp_macs if compiled else 0
        a_bytes, b_bytes = _bytes(op.a_elements, a), _bytes(op.b_elements, w)
        add(unit_for(w, a), op.macs - fp_macs)
        add("fp32", fp_macs)
        if not op.full_precision:
            if w < FP:
                out_channels = op.b_elements // max(op.macs // max(op.outputs, 1), 1)
                qparams += _bytes(out_channels, SCALE_BITS + w)
            if a < FP:
                qparams += _point_bytes(point_channels, a, groups)
                add("fp32", op.outputs * groups)
                psums = op.outputs * groups * ACCUMULATOR_BYTES * 2 if groups > 1 else 0
    elif op.kind in ("attn_qk", "attn_av") and quant_act:
        a = bits.activation
        keys = op.keys if op.cross and op.keys else 0
        start_macs = op.macs // keys if keys else 0
        qparams += _point_bytes(point_channels, a, groups)
        add("fp32", start_macs)
        if op.kind == "attn_qk":
            k_start = op.b_elements // keys if keys else 0
            a_bytes, b_bytes = _bytes(op.a_elements, a), _bytes(op.b_elements - k_start, a)
            start = _bytes(k_start, FP)
            add(unit_for(a, a), op.macs - start_macs)
            rescaled = op.outputs - (op.outputs // keys if keys else 0)   # the <start> column is FP already
            add("fp32", rescaled * groups)
            psums = rescaled * groups * ACCUMULATOR_BYTES * 2 if groups > 1 else 0
            if fused_softmax:   # probabilities leave the chip as codes; the <start> column in FP
                fused = out_bytes * 2
                out_bytes = _bytes(rescaled, a) + _bytes(op.outputs - rescaled, FP)
        else:
            p_start, v_start = (op.a_elements // keys, op.b_elements // keys) if keys else (0, 0)
            a_bytes, b_bytes = _bytes(op.a_elements - p_start, a), _bytes(op.b_elements - v_start, a)
            start = _bytes(p_start + v_start, FP)
            add("shift_add", op.macs - start_macs)
            add("fp32", op.outputs)
    elif op.kind in ("attn_qk", "attn_av"):
        a_bytes, b_bytes = _bytes(op.a_elements, FP), _bytes(op.b_elements, FP)
        add("fp32", op.macs)
        fused = out_bytes * 2 if fused_softmax and op.kind == "attn_qk" else 0   # FP32 probabilities out
    else:   # another dynamic matmul: activation x activation
        a = bits.activation
        a_bytes, b_bytes = _bytes(op.a_elements, a), _bytes(op.b_elements, a)
        add(unit_for(a, a), op.macs)
    return OpTraffic(module=op.module, kind=op.kind, full_precision=op.full_precision, a_bytes=a_bytes,
                     b_bytes=b_bytes, output_bytes=out_bytes, qparam_bytes=qparams, start_bytes=start,
                     partial_sum_bytes=psums, fused_logit_bytes=fused, slices=max(op.slices, 1), macs=macs)


def points_by_op(inventory: Inventory) -> dict:
    """(module, kind) -> the channel counts of the activation points that feed that op."""
    channels: dict = {}
    for point in inventory.points:
        channels.setdefault((point.module, point.role), point.channels)
    return {(op.module, op.kind): [channels[(op.module, role)] for role in POINT_ROLES.get(op.kind, ())
                                   if (op.module, role) in channels]
            for op in inventory.ops}


def inventory_traffic(inventory: Inventory, bits: BitWidths, groups: int,
                      fused_softmax: bool = False, compiled: bool = False) -> list[OpTraffic]:
    points = points_by_op(inventory)
    return [op_traffic(op, bits, groups, points[(op.module, op.kind)], fused_softmax, compiled)
            for op in inventory.ops]
