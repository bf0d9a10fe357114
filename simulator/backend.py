"""The simulator as an ONNX backend (`onnx.backend.base.Backend`), so ONNX's own node tests run on it.

    from simulator.backend import Backend
    rep = Backend.prepare(model)          # a BackendRep
    outputs = rep.run([x, ...])           # in graph-output order

The backend uses the onnxruntime-cpu target (float32 epilogue, 32-bit accumulators).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend as _OnnxBackend
from onnx.backend.base import BackendRep, namedtupledict

from passes.contract import NARROW_BITS, SIGNED_TYPES
from simulator.executor import Simulator


def _elem_type(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0


class SimulatorRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, target: str = "onnxruntime-cpu"):
        self.sim = Simulator(model, target)
        graph = model.graph
        inits = {t.name for t in graph.initializer}
        self.inputs = [vi for vi in graph.input if vi.name not in inits]
        self.outputs = list(graph.output)

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = {vi.name: x for vi, x in zip(self.inputs, inputs)}
        for vi in self.inputs:  # 4-/2-bit inputs arrive as ml_dtypes arrays: hold them widened
            elem = _elem_type(vi)
            if elem in NARROW_BITS and vi.name in feeds:
                feeds[vi.name] = np.asarray(feeds[vi.name]).astype(np.int8 if elem in SIGNED_TYPES else np.uint8)
                self.sim.narrow_bits[vi.name] = NARROW_BITS[elem]
        result = self.sim.run(feeds)
        values = []
        for vi in self.outputs:
            value = result.outputs[vi.name]
            elem = _elem_type(vi)
            if elem in NARROW_BITS:
                value = value.astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
            values.append(value)
        return namedtupledict("Outputs", [vi.name for vi in self.outputs])(*values)


class Backend(_OnnxBackend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> SimulatorRep:
        super().prepare(model, device, **kwargs)
        return SimulatorRep(model, kwargs.get("target", "onnxruntime-cpu"))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")


prepare = Backend.prepare
run_model = Backend.run_model
supports_device = Backend.supports_device
