"""Load ONNX graphs into onnx-graphsurgeon without reading their weights, and save them with one weights file.

A 3.4 GB fp32 UNet never sits in memory whole: external initializers become lazy values that read their bytes
from the weights file when a pass asks (weight quantization reads each weight once and drops it). Saving
copies unchanged external tensors from the source file, or keeps references into a weights file the output
already shares (the static variants).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto
from onnx_graphsurgeon.ir.tensor import LazyValues

from passes.base import PassContext
from passes.errors import PassError

EXTERNAL_THRESHOLD = 1024  # bytes: smaller tensors stay inline
MIN_IR_VERSION = 10        # INT4 initializers and opset 21


def _external_info(tensor: TensorProto) -> dict:
    return {e.key: e.value for e in tensor.external_data}


def read_external_bytes(tensor: TensorProto, base_dir: Path) -> bytes:
    info = _external_info(tensor)
    location = info.get("location", "")
    path = (base_dir / location).resolve()
    if not location or os.path.isabs(location) or base_dir.resolve() not in path.parents:
        raise PassError(f"initializer {tensor.name!r} points outside the graph's folder ({location!r})")
    offset, length = int(info.get("offset", 0)), info.get("length")
    if not path.is_file():
        raise PassError(f"initializer {tensor.name!r}: weights file {str(path)!r} is missing")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(int(length)) if length is not None else f.read()
    expected = int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(
        onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    if length is None and tensor.data_type not in (TensorProto.INT4, TensorProto.UINT4):
        data = data[:expected]
    if tensor.data_type not in (TensorProto.INT4, TensorProto.UINT4) and len(data) != expected:
        raise PassError(f"initializer {tensor.name!r}: weights file {str(path)!r} holds {len(data)} bytes at offset "
                        f"{offset}, expected {expected} (truncated?)")
    return data


class ExternalValues(LazyValues):
    """Lazy values of an initializer stored in an external weights file, read from `base_dir` on demand."""

    def __init__(self, tensor: TensorProto, base_dir: Path):
        super().__init__(tensor)
        self.base_dir = Path(base_dir)

    def load(self) -> np.ndarray:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type)
        data = read_external_bytes(self.tensor, self.base_dir)
        return np.frombuffer(data, dtype=dtype).reshape(tuple(self.tensor.dims)).copy()


def load_graph(path: str | Path) -> gs.Graph:
    """The graph with lazy initializers (external data is read only when a pass needs a tensor's values)."""
    path = Path(path)
    if not path.is_file():
        raise PassError(f"graph {str(path)!r} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise PassError(f"{str(path)!r} is not an ONNX model: {exc}") from None
    graph = gs.import_onnx(model)
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and values.tensor.data_location == TensorProto.EXTERNAL:
            tensor._values = ExternalValues(values.tensor, path.parent)
    return graph


def export_model(graph: gs.Graph, ctx: PassContext | None = None, metadata: dict | None = None) -> onnx.ModelProto:
    """gs graph -> ModelProto: cleaned, sorted, IR >= 10, node metadata_props from the context, model metadata."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph)
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)
    if ctx is not None and ctx.node_metadata:
        for node in model.graph.node:
            props = ctx.node_metadata.get(node.name)
            if props:
                for key in sorted(props):
                    node.metadata_props.add(key=key, value=props[key])
    for key, value in sorted((metadata or {}).items()):
        model.metadata_props.add(key=key, value=value)
    return model


def _to_raw(tensor: TensorProto) -> None:
    if tensor.HasField("raw_data"):
        return
    array = onnx.numpy_helper.to_array(tensor)
    raw = onnx.numpy_helper.from_array(array, tensor.name)
    tensor.CopyFrom(raw)


def save_model(model: onnx.ModelProto, path: str | Path, source_dir: str | Path | None = None,
               weights_name: str | None = None) -> None:
    """Write `model` to `path`. With `weights_name`, tensors >= 1 KiB go to that file beside the graph (appended,
    so several graphs can share it; references already into it are kept); otherwise everything is inline."""
    path = Path(path)
    out_dir = path.parent
    source_dir = Path(source_dir) if source_dir is not None else out_dir
    weights_path = out_dir / weights_name if weights_name else None
    handle = None
    try:
        for tensor in model.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                location = _external_info(tensor).get("location", "")
                if weights_path is not None and (source_dir / location).resolve() == weights_path.resolve():
                    continue  # already in the shared weights file
                data = read_external_bytes(tensor, source_dir)
                del tensor.external_data[:]
                tensor.data_location = TensorProto.DEFAULT
                tensor.raw_data = data
            if weights_path is None:
                continue
            _to_raw(tensor)
            if len(tensor.raw_data) < EXTERNAL_THRESHOLD:
                continue
            if handle is None:
                handle = open(weights_path, "ab")
                handle.seek(0, os.SEEK_END)
            offset = handle.tell()
            handle.write(tensor.raw_data)
            length = len(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", weights_name), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
    finally:
        if handle is not None:
            handle.close()
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
