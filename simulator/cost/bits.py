"""Bit-width configurations: `WxAy` labels, validated, and the standard table of the DGQ paper."""
from __future__ import annotations

import re
from dataclasses import dataclass

from simulator.errors import SimulatorError

SUPPORTED_BITS = (4, 6, 8, 16, 32)
FULL_PRECISION_BITS = 32
STANDARD_BITS = ("W32A32", "W8A8", "W8A6", "W4A8", "W4A6")  # the paper's Table 2 rows
STANDARD_GROUPS = (8, 16)
_LABEL = re.compile(r"^W(\d+)A(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class BitWidths:
    weight: int
    activation: int

    def __post_init__(self):
        for role, bits in (("weight", self.weight), ("activation", self.activation)):
            if bits not in SUPPORTED_BITS:
                raise SimulatorError(f"unknown {role} bit width {bits!r}: expected one of "
                                     f"{', '.join(map(str, SUPPORTED_BITS))}")

    @property
    def label(self) -> str:
        return f"W{self.weight}A{self.activation}"

    @property
    def name(self) -> str:
        """`FP32` for W32A32, else the `WxAy` label."""
        return "FP32" if self.full_precision else self.label

    @property
    def full_precision(self) -> bool:
        return self.weight == FULL_PRECISION_BITS and self.activation == FULL_PRECISION_BITS

    @property
    def quantized_weights(self) -> bool:
        return self.weight < FULL_PRECISION_BITS

    @property
    def quantized_activations(self) -> bool:
        return self.activation < FULL_PRECISION_BITS


def parse_bits(text: str) -> BitWidths:
    """`W8A6` -> BitWidths(8, 6); anything else is a one-line SimulatorError."""
    match = _LABEL.match(str(text).strip())
    expected = f"expected WxAy with x, y in {{{', '.join(map(str, SUPPORTED_BITS))}}} (e.g. W8A8, W32A32 = FP32)"
    if not match:
        raise SimulatorError(f"unknown bit width {text!r}: {expected}")
    weight, activation = int(match.group(1)), int(match.group(2))
    if weight not in SUPPORTED_BITS or activation not in SUPPORTED_BITS:
        raise SimulatorError(f"unknown bit width {text!r}: {expected}")
    return BitWidths(weight, activation)
