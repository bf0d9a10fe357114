"""The simulator's value environment: tensors by name, lazily computed values, and recycled large buffers.

Large activations (attention maps, ~1 GB at SD resolution) are recycled like an arena allocator: a dying
buffer that nothing else references is kept for the next op that asks for one of the same shape. Fresh
memory costs page faults; on a VM a fresh GB can cost seconds.
"""
from __future__ import annotations

import sys

import numpy as np

from simulator.errors import SimulatorError
from simulator.qtensor import QTensor


class Lazy:
    """A value computed on first use (the float view of integer codes)."""
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


POOL_MIN_BYTES = 1 << 25   # buffers below this are cheap to allocate: not recycled
POOL_LIMIT_BYTES = 1 << 31  # most memory kept in freed buffers at a time


class BufferPool:
    """Freed large activation buffers, handed to the next op that needs the same shape and type."""

    def __init__(self):
        self.free: list[np.ndarray] = []

    def take(self, shape, dtype) -> np.ndarray:
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        for i, buf in enumerate(self.free):
            if buf.shape == shape and buf.dtype == dtype:
                return self.free.pop(i)
        return np.empty(shape, dtype)

    def give(self, buf: np.ndarray) -> None:
        self.free.append(buf)
        while sum(b.nbytes for b in self.free) > POOL_LIMIT_BYTES:
            self.free.pop(0)


class Environment:
    def __init__(self, stats, pool: BufferPool | None = None, protected: frozenset = frozenset()):
        self.vals: dict[str, object] = {}
        self.quant: dict[str, QTensor] = {}
        self.stats = stats
        self.pool = pool or BufferPool()
        self.protected = protected   # never overwritten or recycled: initializers, graph inputs, captures
        self.dying: set[str] = set()  # inputs of the running node that die at it

    def get(self, name: str):
        v = self.vals.get(name)
        if v is None and name not in self.vals:
            raise SimulatorError(f"tensor {name!r} is used before it is produced")
        if isinstance(v, Lazy):
            v = v.fn()
            self.vals[name] = v
        return v

    def drop(self, name: str) -> None:
        v = self.vals.get(name)
        if self.exclusive(name, v) and sys.getrefcount(v) <= 3:  # env, v, the call: no one outside holds it
            self.pool.give(v)
        self.vals.pop(name, None)
        self.quant.pop(name, None)

    def exclusive(self, name: str, v) -> bool:
        """Whether v is a large buffer of its own that no other live value can see (recyclable)."""
        if name in self.protected or not isinstance(v, np.ndarray) or v.nbytes < POOL_MIN_BYTES:
            return False
        if v.base is not None or not v.flags.writeable or not v.flags.c_contiguous:
            return False
        return not any(isinstance(other, np.ndarray) and np.may_share_memory(v, other)
                       for key, other in self.vals.items() if key != name and key not in self.protected)
