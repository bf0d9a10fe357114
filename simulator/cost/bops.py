"""Bit operations (BOPs) of one UNet forward, under two conventions.

Notation: b_w, b_a = weight / activation bits of the configuration; FP = 32; G = activation groups.
MACs(op) and outputs(op) come from the `Inventory` (one forward at its batch and resolution).

`paper` - the DGQ paper's Table 2 (BOPs = MACs x b_w x b_a, section 4.1):
    BOPs = sum over every conv, linear, QK^T and A.V of MACs x b_w x b_a.
    Uniform: conv_in / conv_out and the attention matmuls are counted at b_w x b_a too. Table 2 does
    so: SD v1.4 W4A6 is 803.27 G MACs x 24 = 19.28 T ("19.3T"); pricing conv_in/conv_out at 32x32
    would add 0.19 T (19.47 T, printed "19.5T"). Groups, steps and rescales do not enter.
    (The abstract's 694 T -> 43.4 T for SD v1.4 is conv + linear only, without the attention matmuls.)

`exact` - each op at its own operand widths (a = b_a < 32 means activations are quantized):
    conv, linear (quantized)       MACs x b_w x b_a                          -> part conv / linear
    conv_in, conv_out (kept FP)    MACs x 32 x 32                            -> part full_precision
    QK^T                           MACs' x b_a x b_a  (activation x activation) -> part attn_qk
    A.V, a < 32 (log-coded probs)  no multiplies: MACs' shift-adds of a b_a-bit value, reported apart
                                   as `shift_adds` and `shift_add_bops` = shift_adds x b_a
    A.V, a = 32                    MACs x 32 x 32                            -> part attn_av
    <start> branch (cross-attention, a < 32): key/value row 0 and probability column 0 stay FP, so
                                   MACs/keys of each of QK^T and A.V at 32 x 32 -> part start_token,
                                   and MACs' = MACs - MACs/keys above
    other dynamic matmuls          MACs x b_a x b_a                          -> part other
    rescale (a < 32): channel groups split the contraction into G partial sums, each rescaled by one
                                   32 x 32 multiply (combined weight x activation scale) before the add:
                                   conv / linear: outputs x G; QK^T: outputs' x G (outputs' excludes the
                                   FP <start> column); A.V: outputs x 1 (one rescale after the shift-adds)
                                   -> part rescale. `rescale_overhead_bops` (apart, already in rescale) is
                                   the share G > 1 adds over a per-tensor epilogue: the same sums with G - 1.
    per-op widths (`compiled`, an inventory of a compiled graph): each conv/linear at the weight and input
                                   widths its quantizers have (MixDQ's per-layer allocation), the other ops at
                                   the configuration's; a BOS-aware text embedding's <start> row (fp_macs of
                                   to_k/to_v) at 32 x 32 -> part start_token.
    Channel grouping is assumed for every point (the worst case; pixel/token groups on a Linear or 1x1
    conv rescale rows instead and cost outputs x 1). Additions (partial-sum adds, bias) are not counted.
    W32A32 gives the same total as `paper`.
`bops` (and `tbops`) is the sum of the parts; shift-adds are not in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from simulator.cost.bits import FULL_PRECISION_BITS as FP
from simulator.cost.bits import BitWidths
from simulator.cost.inventory import Inventory
from simulator.errors import SimulatorError

PARTS = ("conv", "linear", "attn_qk", "attn_av", "other", "full_precision", "start_token", "rescale")


@dataclass(frozen=True)
class Bops:
    total: int
    parts: dict = field(default_factory=dict)   # PARTS -> BOPs
    shift_adds: int = 0          # exact: log-coded A.V terms (not in total)
    shift_add_bops: int = 0      # exact: shift_adds x b_a (not in total)
    rescale_overhead_bops: int = 0  # exact: the part of `rescale` that G > 1 adds over G = 1


def paper_bops(inventory: Inventory, bits: BitWidths) -> Bops:
    parts = dict.fromkeys(PARTS, 0)
    for op in inventory.ops:
        parts[op.kind] += op.macs * bits.weight * bits.activation
    return Bops(sum(parts.values()), parts)


def exact_bops(inventory: Inventory, bits: BitWidths, groups: int, compiled: bool = False) -> Bops:
    if not isinstance(groups, int) or groups < 1:
        raise SimulatorError(f"groups must be a positive integer, got {groups!r}")
    w, a = bits.weight, bits.activation
    quant_act = bits.quantized_activations
    parts = dict.fromkeys(PARTS, 0)
    shift_adds = overhead_rescales = rescales = 0
    for op in inventory.ops:
        if op.kind in ("conv", "linear"):
            if op.full_precision:
                parts["full_precision"] += op.macs * FP * FP
                continue
            op_w, op_a = (op.weight_bits or w, op.act_bits or a) if compiled else (w, a)
            parts["start_token"] += op.fp_macs * FP * FP if compiled else 0
            parts[op.kind] += (op.macs - (op.fp_macs if compiled else 0)) * op_w * op_a
            if quant_act:
                rescales += op.outputs * groups
                overhead_rescales += op.outputs * (groups - 1)
        elif op.kind in ("attn_qk", "attn_av"):
            if not quant_act:
                parts[op.kind] += op.macs * FP * FP
                continue
            start_macs = op.macs // op.keys if op.cross and op.keys else 0
            parts["start_token"] += start_macs * FP * FP
            if op.kind == "attn_qk":
                start_outputs = op.outputs // op.keys if start_macs else 0
                parts["attn_qk"] += (op.macs - start_macs) * a * a
                rescales += (op.outputs - start_outputs) * groups
                overhead_rescales += (op.outputs - start_outputs) * (groups - 1)
            else:
                shift_adds += op.macs - start_macs
                rescales += op.outputs
        else:
            parts["other"] += op.macs * a * a
    parts["rescale"] = rescales * FP * FP
    return Bops(sum(parts.values()), parts, shift_adds=shift_adds, shift_add_bops=shift_adds * a,
                rescale_overhead_bops=overhead_rescales * FP * FP)


def count_bops(inventory: Inventory, bits: BitWidths, groups: int, convention: str, compiled: bool = False) -> Bops:
    if compiled and convention != "exact":
        raise SimulatorError("per-op widths (a compiled graph's) are counted under the exact convention only")
    if convention == "paper":
        return paper_bops(inventory, bits)
    if convention == "exact":
        return exact_bops(inventory, bits, groups, compiled)
    raise SimulatorError(f"unknown BOPs convention {convention!r}: expected paper or exact")
