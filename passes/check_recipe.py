"""Check a recipe against the graph before anything is rewritten: same model, same step count, same shapes.

Recipes are matched to graphs by module paths (every recipe module must be in the graph's module map) and by
their step count; weight and group-map sizes must fit the graph's layers (a recipe for another model fails here).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext, nodes_by_name
from passes.contract import SCHEDULE
from passes.errors import PassError

ATTENTION_ROLES = ("q", "k", "v", "attn_probs")


def _in_channels(node: gs.Node) -> int | None:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(w, gs.Constant):
        return None
    shape = list(w.shape)
    if node.op == "Conv":
        return int(shape[1]) * int(node.attrs.get("group", 1))
    if node.op == "Gemm":
        return int(shape[1] if node.attrs.get("transB", 0) else shape[0])
    return int(shape[0])


def _out_channels(node: gs.Node) -> int | None:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if not isinstance(w, gs.Constant):
        return None
    shape = list(w.shape)
    return int(shape[0] if node.op == "Conv" or (node.op == "Gemm" and node.attrs.get("transB", 0)) else shape[1])


class CheckRecipe(Pass):
    name = "check_recipe"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        recipe = ctx.recipe
        steps = len(recipe.timesteps)
        existing = graph.tensors().get(SCHEDULE)
        if existing is not None:
            have = list(existing.shape)[0] if existing.shape else "?"
            raise PassError(f"the graph is already compiled (its schedule {SCHEDULE!r} has {have} steps; the recipe "
                            f"has {steps}): compile the fp32 export, not a compiled graph")
        layers = {e.module: e for e in ctx.module_map if e.kind in ("conv", "linear")}
        attentions = {e.module for e in ctx.module_map if e.kind in ("attn_qk", "attn_av")}
        by_name = nodes_by_name(graph)
        for (module, role), tq in sorted(recipe.tensors.items()):
            where = f"recipe entry ({module}, {role})"
            if role in ATTENTION_ROLES:
                if module not in attentions:
                    raise PassError(f"{where}: the graph has no attention {module!r} "
                                    f"(recipe for another model, or attention exported fused?)")
            elif module not in layers:
                raise PassError(f"{where}: module {module!r} is not in the graph's module map (recipe for another model?)")
            if role != "weight" and tq.scale.shape[0] != steps:
                raise PassError(f"{where}: its scale table has {tq.scale.shape[0]} steps, the recipe's schedule has "
                                f"{steps}: recipe/graph step-count mismatch")
            if tq.group_map is not None and tq.group_map.shape[0] not in (1, steps):
                raise PassError(f"{where}: its group map has {tq.group_map.shape[0]} rows, expected 1 or {steps} "
                                "(step-count mismatch)")
            if role in ("input", "weight"):
                node = by_name.get(layers[module].node)
                if node is None:
                    raise PassError(f"{where}: module-map node {layers[module].node!r} is not in the graph")
                if role == "weight":
                    c_out = _out_channels(node)
                    if c_out is not None and tq.scale.shape[0] != c_out:
                        raise PassError(f"{where}: {tq.scale.shape[0]} channel scales, the graph's layer has {c_out} "
                                        "output channels (recipe for another model?)")
                elif tq.axis == "channel":
                    c_in = _in_channels(node)
                    if c_in is not None and tq.group_map.shape[1] != c_in:
                        raise PassError(f"{where}: group map covers {tq.group_map.shape[1]} channels, the graph's layer "
                                        f"has {c_in} input channels (recipe for another model?)")
            elif role in ("q", "k", "v") and tq.axis == "channel":
                proj = layers.get(f"{module}.to_{role}")
                c = _out_channels(by_name[proj.node]) if proj and proj.node in by_name else None
                if c is not None and tq.group_map.shape[1] != c:
                    raise PassError(f"{where}: group map covers {tq.group_map.shape[1]} channels, "
                                    f"{module}.to_{role} has {c} (recipe for another model?)")
        return graph
