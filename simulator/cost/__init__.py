"""Cost model: MACs, bit operations (BOPs), model size and quantization-parameter memory of a diffusion UNet.

Counts come from an architecture config (a meta-tensor forward, no weights: `macs_from_config`) or from an
ONNX graph (shape inference at a fixed batch/resolution: `macs_from_graph`); both give an `Inventory`
(every Conv/Linear/attention matmul with its MACs, plus parameter counts), which `bops`, `size` and
`report` turn into figures for one bit-width configuration or the standard table. `traffic` (bytes moved
per op) and `roofline` (latency and energy on a target's `hardware` numbers) extend them to time and energy.
"""
from simulator.cost.bits import STANDARD_BITS, STANDARD_GROUPS, BitWidths, parse_bits
from simulator.cost.inventory import KINDS, CountedOp, Inventory, QuantPoint
from simulator.cost.report import CONVENTIONS, CostRow, cost_row, load_inventory, standard_rows
from simulator.cost.roofline import Estimate, OpEstimate, estimate, op_estimates

__all__ = ["STANDARD_BITS", "STANDARD_GROUPS", "BitWidths", "parse_bits", "KINDS", "CountedOp", "Inventory",
           "QuantPoint", "CONVENTIONS", "CostRow", "cost_row", "load_inventory", "standard_rows", "Estimate",
           "OpEstimate", "estimate", "op_estimates"]
