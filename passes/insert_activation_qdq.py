"""Activation QDQ with per-group, per-timestep parameters at every Conv/Linear input and at q, k, v.

- role "input": on the edge into the module's Conv/Gemm/MatMul (only that consumer is rewired: a tensor read by
  several modules, e.g. encoder_hidden_states, gets one QDQ per module with that module's parameters);
- roles "q", "k", "v": at the to_q/to_k/to_v output [B, N, C_inner], before the head split; with exclude_bos
  (cross-attention) token row 0 stays FP: Slice rows 0 / 1.., QDQ the rest, Concat back on axis 1.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, add_node, nodes_by_name, step_index_tensor
from passes.contract import QKV_ROLES, bos_row_names, node_prefix
from passes.errors import PassError
from passes.patterns import attention_matches, match_weighted_op, reads_text_tokens
from passes.pixel_groups import LevelGrid, level_grid
from passes.qdq import INT64_MAX, slice_axis, uniform_qdq

LAYOUT_OF_OP = {"Conv": "nchw", "Gemm": "nc", "MatMul": "nlc"}


def rewire_consumers(tensor: gs.Tensor, new: gs.Tensor, skip: set) -> int:
    """Point every consumer of `tensor` (except Shape nodes and `skip`) at `new`; returns how many."""
    count = 0
    for node in list(tensor.outputs):
        if node.op == "Shape" or id(node) in skip:
            continue
        for i, t in enumerate(node.inputs):
            if t is tensor:
                node.inputs[i] = new
                count += 1
    return count


def pixel_grid(tq, layout: str, pixels_are_tokens: bool, ctx: PassContext) -> LevelGrid | None:
    """The calibrated level of a pixel map (resampled at run time), or None: kept at its length."""
    if tq.axis != "pixel" or pixels_are_tokens:
        return None
    grid = level_grid(tq.group_map.shape[1], ctx.recipe.resolution)
    if grid is None:
        ctx.notes.append(f"({tq.module}, {tq.role}): {tq.group_map.shape[1]} grouped pixels match no level of the "
                         f"calibrated {ctx.recipe.resolution[0]}x{ctx.recipe.resolution[1]} grid: fixed length")
    return grid


class InsertActivationQdq(Pass):
    name = "insert_activation_qdq"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        step = step_index_tensor(graph)
        by_name = nodes_by_name(graph)
        wanted = {m for (m, r) in ctx.recipe.tensors if r in QKV_ROLES}
        matches = attention_matches(graph, ctx) if wanted else {}  # before any rewiring
        for entry in ctx.module_map:
            tq = ctx.entry(entry.module, "input")
            if tq is None or entry.kind not in ("conv", "linear") or tq.exclude_bos:
                continue  # exclude_bos inputs (the text embedding, <start> row FP): quantize_text_embedding
            node = by_name[entry.node]
            op = match_weighted_op(node) if isinstance(node.inputs[1], gs.Constant) else None
            layout = LAYOUT_OF_OP[node.op]
            if op is None and node.op == "MatMul":  # weights already dequantized: still a linear on [B, N, C]
                layout = "nlc"
            x = node.inputs[0]
            grid = pixel_grid(tq, layout, reads_text_tokens(graph, x), ctx)
            dq, record, meta = uniform_qdq(graph, x, tq, layout, step, grid=grid)
            node.inputs[0] = dq
            ctx.records.append(record)
            ctx.node_metadata.update(meta)
        for module in sorted(wanted):
            if module not in matches:
                raise PassError(f"recipe quantizes q/k/v of {module}, but the graph has no MatMul -> Softmax -> MatMul "
                                "attention there (exported with fused attention?)")
            match = matches[module]
            for role in QKV_ROLES:
                tq = ctx.entry(module, role)
                if tq is None:
                    continue
                x = getattr(match, role)
                grid = pixel_grid(tq, "nlc", match.cross and role in ("k", "v"), ctx)
                if tq.exclude_bos and role in ("k", "v"):
                    if not match.cross:
                        raise PassError(f"recipe ({module}, {role}) has exclude_bos, but {module} is a self-attention")
                    names = bos_row_names(node_prefix(module, role))
                    head = slice_axis(graph, x, 1, 0, 1, names["bos"])
                    rest = slice_axis(graph, x, 1, 1, INT64_MAX, names["rest"])
                    dq, record, meta = uniform_qdq(graph, rest, tq, "nlc", step)
                    record.tensor, record.bos_split = x.name, True
                    joined = add_node(graph, "Concat", names["join"], [head, dq], attrs={"axis": 1})
                    mine = {id(n) for n in head.inputs + rest.inputs}
                    rewire_consumers(x, joined, mine)
                else:
                    dq, record, meta = uniform_qdq(graph, x, tq, "nlc", step, grid=grid)
                    mine = {id(n) for n in graph.nodes if n.name.startswith(node_prefix(module, role) + "/")}
                    rewire_consumers(x, dq, mine)
                ctx.records.append(record)
                ctx.node_metadata.update(meta)
        return graph
