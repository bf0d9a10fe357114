"""Cost model: MACs, bit operations (BOPs), model size and quantization-parameter memory of a diffusion UNet.

Counts come from an architecture config (a meta-tensor forward, no weights: `macs_from_config`) or from an
ONNX graph (shape inference at a fixed batch/resolution: `macs_from_graph`); both give an `Inventory`
(every Conv/Linear/attention matmul with its MACs, plus parameter counts), which `bops`, `size` and
`report` turn into figures for one bit-width configuration or the standard table.
"""
from simulator.cost.bits import STANDARD_BITS, STANDARD_GROUPS, BitWidths, parse_bits
from simulator.cost.inventory import KINDS, CountedOp, Inventory, QuantPoint
from simulator.cost.report import CONVENTIONS, CostRow, cost_row, load_inventory, standard_rows

__all__ = ["STANDARD_BITS", "STANDARD_GROUPS", "BitWidths", "parse_bits", "KINDS", "CountedOp", "Inventory",
           "QuantPoint", "CONVENTIONS", "CostRow", "cost_row", "load_inventory", "standard_rows"]
