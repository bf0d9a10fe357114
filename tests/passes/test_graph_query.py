"""The graph-query helper on a tiny graph: producers, consumers, names, constants, walks back."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from passes.graph_query import GraphIndex, attribute


def _graph():
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(np.float32(2.0))),
             helper.make_node("Mul", ["x", "c"], ["m"], name="mul"),
             helper.make_node("Reshape", ["table", "shape"], ["r"], name="reshape"),
             helper.make_node("Gather", ["r", "i"], ["g"], name="gather", axis=0),
             helper.make_node("Add", ["m", "g"], ["y"], name="add"),
             helper.make_node("Relu", ["m"], ["z"], name="relu")]
    inits = [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "table"),
             numpy_helper.from_array(np.array([-1], np.int64), "shape"),
             numpy_helper.from_array(np.array([1], np.int64), "i")]
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])], inits)


def test_producers_consumers_and_names():
    index = GraphIndex(helper.make_model(_graph()))  # a ModelProto works as well as its graph
    assert index.producer["m"].name == "mul"
    assert "x" not in index.producer                                # a graph input has no producer
    assert sorted(n.name for n in index.users("m")) == ["add", "relu"]
    assert index.users("y") == []
    assert index.node("gather").op_type == "Gather" and index.node("nope") is None
    assert attribute(index.node("gather"), "axis") == 0 and attribute(index.node("add"), "axis", 7) == 7


def test_constant_values_and_types():
    index = GraphIndex(_graph())
    assert index.array("c") == np.float32(2.0)                      # a Constant node's output
    np.testing.assert_array_equal(index.array("table"), np.arange(6).reshape(2, 3))
    assert index.array("m") is None                                 # computed
    assert index.elem_type("i", TensorProto.UINT8) == TensorProto.INT64
    assert index.elem_type("c", TensorProto.UINT8) == TensorProto.FLOAT
    assert index.elem_type("m", TensorProto.UINT8) == TensorProto.UINT8


def test_walk_back_stops_at_other_ops():
    index = GraphIndex(_graph())
    seen = list(index.walk_back("g", ("Gather", "Reshape")))
    assert seen[:3] == ["g", "r", "i"] and "table" in seen and "shape" in seen
    assert "m" not in seen and "x" not in seen                      # Add / Mul are not walked through
    assert list(index.walk_back("y", ("Gather",))) == ["y"]         # Add is not in the path
    assert list(index.walk_back("g", ("Gather", "Reshape"), depth=1)) == ["g"]
