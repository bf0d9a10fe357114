"""The static variant for compilers that need constant scales: the graph of one calibrated step.

The step index becomes the constant `step`; every Gather/Reshape that depends only on it and on initializers
(scale and zero-point tables, group maps) is folded into constant per-index vectors, and the schedule, tables
and maps leave the graph. Inputs and outputs stay those of the FP graph (`timestep` is then unused).
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext
from passes.contract import STEP_INDEX
from passes.errors import PassError


def _gather(node, data, indices):
    return np.take(data, indices, axis=int(node.attrs.get("axis", 0)))


def _reshape(node, data, shape):
    shape = [data.shape[i] if (s == 0 and not node.attrs.get("allowzero", 0)) else int(s) for i, s in enumerate(shape)]
    return data.reshape(shape)


def _cast(node, data):
    import onnx
    return data.astype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))


FOLDABLE = {"Gather": _gather, "Reshape": _reshape, "Cast": _cast}


def step_dependent_nodes(graph: gs.Graph, start: gs.Tensor) -> list[gs.Node]:
    """Nodes downstream of `start`, in topological order (networkx over tensor -> node -> tensor edges)."""
    g = nx.DiGraph()
    for node in graph.nodes:
        for t in node.inputs:
            g.add_edge(("t", t.name), ("n", id(node)))
        for t in node.outputs:
            g.add_edge(("n", id(node)), ("t", t.name))
    if ("t", start.name) not in g:
        return []
    down = g.subgraph(nx.descendants(g, ("t", start.name)) | {("t", start.name)})
    by_id = {id(n): n for n in graph.nodes}
    return [by_id[key[1]] for key in nx.topological_sort(down) if key[0] == "n"]


class MakeStaticVariant(Pass):
    name = "make_static_variant"

    def __init__(self, step: int):
        self.step = int(step)

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        steps = len(ctx.recipe.timesteps)
        if not 0 <= self.step < steps:
            raise PassError(f"static step {self.step} is outside the calibrated schedule (0..{steps - 1})")
        step = graph.tensors().get(STEP_INDEX)
        if step is None:
            raise PassError(f"the graph has no {STEP_INDEX!r}: make_static_variant needs a compiled graph")
        known = {step.name: np.array([self.step], dtype=np.int64)}

        def value(t):
            if isinstance(t, gs.Constant):
                return t.values
            return known.get(t.name)

        folded: dict[str, gs.Constant] = {}
        for node in step_dependent_nodes(graph, step):
            fold = FOLDABLE.get(node.op)
            inputs = [value(t) for t in node.inputs]
            if fold is not None and all(v is not None for v in inputs):
                known[node.outputs[0].name] = fold(node, *inputs)
                continue
            for i, t in enumerate(node.inputs):  # first node that cannot fold: feed it constants
                if not isinstance(t, gs.Constant) and t.name in known:
                    if t.name not in folded:
                        folded[t.name] = gs.Constant(f"{t.name}/step{self.step}", np.ascontiguousarray(known[t.name]))
                    node.inputs[i] = folded[t.name]
        graph.cleanup(remove_unused_graph_inputs=False)
        return graph
