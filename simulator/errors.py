"""The error type the simulator, targets and cost model raise for inputs they cannot use."""


class SimulatorError(Exception):
    """A graph, op, target file or cost query we cannot handle; the message names the node/field and why."""


class Unsupported(Exception):
    """An integer path cannot take this operand layout; the op runs on dequantized floats instead."""
