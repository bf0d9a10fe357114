"""Constant (value, or one of the value_* attributes)."""
import numpy as np

from simulator.errors import SimulatorError

_ATTRS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


def run(ctx):
    if "value" in ctx.node.attrs:
        return [np.array(ctx.attr("value"))]
    for name, dtype in _ATTRS.items():
        if name in ctx.node.attrs:
            return [np.array(ctx.attr(name), dtype=dtype)]
    raise SimulatorError(f"node {ctx.node.name!r}: Constant without a supported value attribute")
