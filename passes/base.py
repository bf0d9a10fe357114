"""What every pass shares: the `Pass` base, the context passes read and fill, and the record of a quantized tensor.

A pass is one file with one job: a class with a verb-object `name` and `run(graph, ctx) -> graph` over an
onnx-graphsurgeon graph. Passes never import dgq_compiler; the recipe arrives duck-typed in the context
(`timesteps`, `tensors[(module, role)]` -> entries with quantizer, bits, axis, scale, zero_point, group_map,
dynamic, exclude_bos). What the passes write into the graph is the contract of passes/contract.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from passes.contract import STEP_INDEX
from passes.errors import PassError
from passes.module_map import ModuleEntry


@dataclass
class QuantRecord:
    """One quantized tensor of the compiled graph, for the encodings file and the summary table."""
    module: str
    role: str
    quantizer: str        # uniform | log2
    bits: int
    axis: str             # tensor | channel | pixel | out_channel
    groups: int
    tensor: str           # the FP tensor that is quantized (weights: the original initializer)
    node: str             # the QuantizeLinear / QuantizeLog node, or the weight's DequantizeLinear
    onnx_axis: int | None
    params: Any           # the recipe entry (scale, zero_point, group_map)
    storage: str = "uint8"  # int8 | int4 (weights) | uint8 (activations)
    bos_split: bool = False
    last_axis_rank: int = 0  # when onnx_axis is the last axis of the tensor QuantizeLinear reads: its rank (else 0)


@dataclass
class PassContext:
    recipe: Any
    module_map: list[ModuleEntry]
    records: list[QuantRecord] = field(default_factory=list)
    node_metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # node name -> metadata_props
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> text, written beside the graph
    notes: list[str] = field(default_factory=list)
    attention: dict | None = None  # module -> patterns.AttentionMatch, matched once on the FP structure

    @property
    def steps(self) -> int:
        return len(self.recipe.timesteps)

    def entry(self, module: str, role: str):
        return self.recipe.tensors.get((module, role))

    def entries(self, role: str) -> list:
        return [tq for (m, r), tq in sorted(self.recipe.tensors.items()) if r == role]

    def modules_by_path(self) -> dict[str, list[ModuleEntry]]:
        out: dict[str, list[ModuleEntry]] = {}
        for e in self.module_map:
            out.setdefault(e.module, []).append(e)
        return out


class Pass:
    """Base of every pass: subclasses set `name` (verb_object) and implement `run`."""
    name = "pass"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


# ---------------------------------------------------------------- graph helpers shared by passes

def nodes_by_name(graph: gs.Graph) -> dict[str, gs.Node]:
    return {n.name: n for n in graph.nodes}


def constant(name: str, values: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(values))


def add_node(graph: gs.Graph, op: str, name: str, inputs: list, out_name: str | None = None, *,
             dtype=np.float32, attrs: dict | None = None, domain: str | None = None) -> gs.Variable:
    """Append one node; returns its (single) output tensor, named `out_name` or `<name>_output_0`."""
    out = gs.Variable(out_name or f"{name}_output_0", dtype=dtype)
    node = gs.Node(op=op, name=name, attrs=attrs or {}, inputs=list(inputs), outputs=[out], domain=domain)
    graph.nodes.append(node)
    return out


def step_index_tensor(graph: gs.Graph) -> gs.Variable:
    tensor = graph.tensors().get(STEP_INDEX)
    if tensor is None:
        raise PassError(f"the graph has no {STEP_INDEX!r} tensor: run insert_step_index first")
    return tensor
