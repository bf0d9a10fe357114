"""Compute the step index in the graph: the calibrated timestep nearest to the `timestep` input.

timestep (a scalar, [1] or [batch]: pipelines feed all three) -> Reshape [-1] -> Slice [0:1] (every entry is
the same step in a sampling loop, so the first decides) -> dgq.schedule [T] - t -> Abs -> ArgMin(axis 0, first
minimum) -> dgq.step_index int64 [1]. The compiled graph keeps the FP graph's inputs, so it drops into an
existing ONNX Stable Diffusion pipeline.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, constant
from passes.contract import SCHEDULE, STEP_INDEX, STEP_PREFIX, TIMESTEP_INPUT
from passes.errors import PassError


class InsertStepIndex(Pass):
    name = "insert_step_index"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        if STEP_INDEX in graph.tensors():
            raise PassError(f"the graph already has a {STEP_INDEX!r} tensor (compiled twice?)")
        timestep = next((t for t in graph.inputs if t.name == TIMESTEP_INPUT), None)
        if timestep is None:
            raise PassError(f"the graph has no {TIMESTEP_INPUT!r} input (inputs: "
                            f"{', '.join(t.name for t in graph.inputs)}); expected an exported UNet")
        dtype = np.dtype(timestep.dtype) if timestep.dtype is not None else np.dtype(np.float32)
        flat = add_node(graph, "Reshape", f"{STEP_PREFIX}/Reshape",
                        [timestep, constant(f"{STEP_PREFIX}/flat", np.array([-1], np.int64))], dtype=dtype)
        timestep = add_node(graph, "Slice", f"{STEP_PREFIX}/Slice",
                            [flat, constant(f"{STEP_PREFIX}/starts", np.array([0], np.int64)),
                             constant(f"{STEP_PREFIX}/ends", np.array([1], np.int64))], dtype=dtype)
        if dtype != np.float32:
            timestep = add_node(graph, "Cast", f"{STEP_PREFIX}/Cast", [timestep], attrs={"to": onnx.TensorProto.FLOAT})
        schedule = constant(SCHEDULE, np.asarray(ctx.recipe.timesteps, dtype=np.float32))
        diff = add_node(graph, "Sub", f"{STEP_PREFIX}/Sub", [schedule, timestep])
        dist = add_node(graph, "Abs", f"{STEP_PREFIX}/Abs", [diff])
        add_node(graph, "ArgMin", f"{STEP_PREFIX}/ArgMin", [dist], STEP_INDEX, dtype=np.int64,
                 attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})
        return graph
