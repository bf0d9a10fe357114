"""Round: ties to even (ONNX semantics)."""

from simulator.ops._common import unary
from simulator.rounding import RoundingMode, round_float

run = unary(lambda x: round_float(x, RoundingMode.HALF_EVEN))
