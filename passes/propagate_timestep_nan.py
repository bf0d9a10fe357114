"""Make a NaN or infinite `timestep` reach the outputs, as it does in the fp32 graph.

The compiled graph picks its step by ArgMin over |schedule - t|, which returns some step for t = NaN or +-inf,
so without this a broken timestep gives finite, plausible output. Every floating-point output gets

    out + Reshape(t - t, [-1, 1, ...]) + (t0 - t0)        (t - t: 0 for finite t, NaN for NaN and +-inf)

the first term per sample (timestep [1] or [batch] broadcasts along the batch axis), the second from the
first entry, which decides the step for the whole batch. Finite timesteps add exact zeros: values unchanged.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant
from passes.contract import NODE_PREFIX, TIMESTEP_INPUT
from passes.errors import PassError

PREFIX = f"{NODE_PREFIX}timestep_nan"


def _nan_terms(graph: gs.Graph, timestep: gs.Tensor) -> tuple[gs.Variable, gs.Variable]:
    """(t - t as [T], t0 - t0 as [1]), float32."""
    t = timestep
    if t.dtype is None or np.dtype(t.dtype) != np.float32:
        t = add_node(graph, "Cast", f"{PREFIX}/Cast", [t], attrs={"to": onnx.TensorProto.FLOAT})
    flat = add_node(graph, "Reshape", f"{PREFIX}/Reshape", [t, constant(f"{PREFIX}/flat", np.array([-1], np.int64))])
    zero = add_node(graph, "Sub", f"{PREFIX}/Sub", [flat, flat])
    first = add_node(graph, "Slice", f"{PREFIX}/Slice_first",
                     [zero, constant(f"{PREFIX}/starts", np.array([0], np.int64)),
                      constant(f"{PREFIX}/ends", np.array([1], np.int64))])
    return zero, first


class PropagateTimestepNan(Pass):
    name = "propagate_timestep_nan"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        timestep = next((t for t in graph.inputs if t.name == TIMESTEP_INPUT), None)
        if timestep is None:
            raise PassError(f"the graph has no {TIMESTEP_INPUT!r} input; expected an exported UNet")
        outputs = [t for t in graph.outputs if t.dtype is not None and np.dtype(t.dtype) == np.float32]
        if not outputs:
            return graph
        zero, first = _nan_terms(graph, timestep)
        for i, out in enumerate(outputs):
            rank = len(out.shape) if out.shape is not None else 4
            p = f"{PREFIX}/{i}"
            per_sample = add_node(graph, "Reshape", f"{p}/Reshape",
                                  [zero, constant(f"{p}/shape", np.array([-1] + [1] * (rank - 1), np.int64))])
            term = add_node(graph, "Add", f"{p}/Add_first", [per_sample, first])
            # the producer now writes a new tensor; the output keeps its name, computed by the Add
            inner = gs.Variable(f"{p}/{out.name}_before_nan", dtype=out.dtype, shape=out.shape)
            producer = out.inputs[0]
            producer.outputs[producer.outputs.index(out)] = inner
            graph.nodes.append(gs.Node("Add", f"{p}/Add", inputs=[inner, term], outputs=[out]))
        return graph
