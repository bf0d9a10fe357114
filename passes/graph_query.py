"""Structural questions about an ONNX graph (onnx protos, not graphsurgeon): who produces a tensor, who reads
it, which node has a name, the constant value behind a tensor. The one index of them for passes, simulator
and dgq_compiler; it reads the graph and never changes it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """Producer / consumer / name / constant indexes of one onnx GraphProto, built once."""

    def __init__(self, graph: onnx.GraphProto):
        if isinstance(graph, onnx.ModelProto):
            graph = graph.graph
        self.graph = graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
        self._by_name: dict[str, onnx.NodeProto] | None = None

    def users(self, tensor: str) -> list:
        return self.consumers.get(tensor, [])

    def node(self, name: str):
        """The node called `name`, or None."""
        if self._by_name is None:
            self._by_name = {n.name: n for n in self.graph.node}
        return self._by_name.get(name)

    def array(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output; None for a computed tensor."""
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.constants.get(tensor)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def elem_type(self, tensor: str, default: int) -> int:
        """ONNX element type of a constant tensor (initializer or Constant), else `default`."""
        if tensor in self.initializers:
            return self.initializers[tensor].data_type
        arr = self.array(tensor)
        return onnx.helper.np_dtype_to_tensor_dtype(arr.dtype) if arr is not None else default

    def walk_back(self, tensor: str, through: Iterable[str], depth: int = 8) -> Iterable[str]:
        """Breadth-first over the tensors `tensor` is computed from via ops in `through` (itself first)."""
        through = set(through)
        frontier = [tensor]
        for _ in range(depth):
            nxt = []
            for t in frontier:
                yield t
                p = self.producer.get(t)
                if p is not None and p.op_type in through:
                    nxt.extend(x for x in p.input if x)
            frontier = nxt


def attribute(node, name: str, default=None):
    """An attribute's value of an onnx NodeProto, or `default`."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
