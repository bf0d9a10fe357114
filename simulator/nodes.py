"""Graph nodes as the simulator holds them: frozen records with decoded attributes, initializers as numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict

    @property
    def key(self) -> str:
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}.{self.op_type}"


def attribute_value(a: onnx.AttributeProto):
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode("utf-8") for x in v]
    return v


def to_numpy(t: onnx.TensorProto) -> np.ndarray:
    """Initializer -> numpy; 4-bit and other ml_dtypes integers are widened to int8/uint8 codes."""
    arr = numpy_helper.to_array(t)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.INT2):
        return arr.astype(np.int8)
    if t.data_type in (onnx.TensorProto.UINT4, onnx.TensorProto.UINT2):
        return arr.astype(np.uint8)
    return arr


def make_node(n: onnx.NodeProto, index: int, ref_attrs: dict | None = None) -> Node:
    attrs = {}
    for a in n.attribute:
        if a.ref_attr_name:  # inside a function body: the caller's attribute
            if ref_attrs is not None and a.ref_attr_name in ref_attrs:
                attrs[a.name] = ref_attrs[a.ref_attr_name]
            continue
        attrs[a.name] = attribute_value(a)
    return Node(name=n.name or f"{n.op_type}_{index}", op_type=n.op_type, domain=n.domain,
                inputs=tuple(n.input), outputs=tuple(n.output), attrs=attrs)
