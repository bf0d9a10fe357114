"""Model size and quantization-parameter memory of one configuration (bytes, rounded up).

Model size (the same under both BOPs conventions):
    quantized weights   every Conv/Linear weight except conv_in/conv_out, at b_w bits each
    FP parameters       conv_in/conv_out, biases, norms, embeddings, ...: 32 bits each
    model_size_bytes = ceil(quantized x b_w / 8) + FP x 4.   (b_w = 32 gives the FP32 model.)
    This reproduces the paper's Table 2 size column within 2% (it does not say what it counts).

Quantization parameters, reported apart (`qparam_bytes` and its parts), none for W32A32:
    weight scales       b_w < 32: per output channel one float32 scale + one b_w-bit zero point
    activation tables   b_a < 32: per activation point a [T, G] float32 scale table + [T, G] b_a-bit zero points
    group maps          b_a < 32 and G > 1: per point one index of ceil(log2 G) bits per channel, per step
                        ([T, C]); `shared_group_map` (the hardware variant) keeps one map ([1, C]).
    Activation points: the input of every quantized Conv/Linear and the q, k, v operands of every
    attention matmul (channel dim = the operand's inner width). The attention probabilities use the
    dynamic log quantizer (scale = the tensor's max at inference), so they store nothing.
    Channel grouping is assumed (a pixel-grouped point's map spans pixels/tokens instead).
Per-op widths (`compiled`: an inventory of a compiled graph with MixDQ's per-layer widths): each quantized
Conv/Linear weight at its own b_w (its elements are the op's second operand), the rest as above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.cost.bits import FULL_PRECISION_BITS as FP
from simulator.cost.bits import BitWidths
from simulator.cost.inventory import Inventory
from simulator.errors import SimulatorError

SCALE_BITS = 32


def _bytes(bits: int) -> int:
    return -(-bits // 8)


@dataclass(frozen=True)
class SizeReport:
    quantized_weight_bytes: int
    fp_param_bytes: int
    model_size_bytes: int
    weight_scale_bytes: int
    activation_table_bytes: int
    group_map_bytes: int
    qparam_bytes: int


def _weight_bits(inventory: Inventory, default: int) -> int:
    """Bits of every quantized weight at its own width; elements no op claims take `default`."""
    claimed = total = 0
    for op in inventory.ops:
        if op.kind in ("conv", "linear") and not op.full_precision:
            claimed += op.b_elements
            total += op.b_elements * (op.weight_bits or default)
    return total + max(inventory.quantized_weight_elements - claimed, 0) * default


def size_report(inventory: Inventory, bits: BitWidths, groups: int, steps: int,
                shared_group_map: bool = False, compiled: bool = False) -> SizeReport:
    if not isinstance(groups, int) or groups < 1:
        raise SimulatorError(f"groups must be a positive integer, got {groups!r}")
    if not isinstance(steps, int) or steps < 1:
        raise SimulatorError(f"steps must be a positive integer, got {steps!r}")
    quantized = _bytes(_weight_bits(inventory, bits.weight) if compiled else
                       inventory.quantized_weight_elements * bits.weight)
    fp = _bytes(inventory.fp_param_elements * FP)
    weight_scales = table = maps = 0
    if bits.quantized_weights:
        weight_scales = _bytes(inventory.weight_channels * (SCALE_BITS + bits.weight))
    if bits.quantized_activations:
        table = _bytes(len(inventory.points) * steps * groups * (SCALE_BITS + bits.activation))
        if groups > 1:
            index_bits = math.ceil(math.log2(groups))
            map_steps = 1 if shared_group_map else steps
            maps = _bytes(sum(p.channels for p in inventory.points) * map_steps * index_bits)
    return SizeReport(quantized_weight_bytes=quantized, fp_param_bytes=fp, model_size_bytes=quantized + fp,
                      weight_scale_bytes=weight_scales, activation_table_bytes=table, group_map_bytes=maps,
                      qparam_bytes=weight_scales + table + maps)
