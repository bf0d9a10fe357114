"""Shape arithmetic for the per-node hot paths: numpy's np.prod / np.broadcast_shapes cost microseconds
per call on small tuples, and a UNet step asks thousands of times."""
from __future__ import annotations

import math


def numel(shape) -> int:
    """Number of elements of `shape` (1 for ())."""
    return math.prod(int(d) for d in shape)


def broadcast_shape(a: tuple, b: tuple) -> tuple:
    """np.broadcast_shapes(a, b) for two shapes (ValueError when they do not broadcast, as numpy)."""
    a, b = tuple(a), tuple(b)
    if a == b or not b:
        return a
    if not a:
        return b
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {list(a)} and {list(b)} cannot be broadcast together")
        out.append(y if x == 1 else x)
    return tuple(out)
