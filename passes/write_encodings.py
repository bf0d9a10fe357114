"""The encodings file: every quantized tensor's parameters, per step, for toolchains that consume encodings.

The graph is unchanged; the document goes to `ctx.artifacts["encodings.json"]` (the caller writes it beside
the graph, atomically). Deterministic: entries sorted by (module, role), arrays as plain lists.
"""
from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs

from passes.base import Pass, PassContext
from passes.contract import SCHEDULE, STEP_INDEX, weight_names

ENCODINGS_NAME = "encodings.json"
FORMAT = "dgq-encodings"
VERSION = 1


def _list(array) -> list:
    return np.asarray(array).tolist()


def _block_sizes(graph: gs.Graph | None) -> dict[str, int]:
    """QuantizeLinear node -> block size, for the nodes written in the blocked form."""
    if graph is None:
        return {}
    return {n.name: int(n.attrs["block_size"]) for n in graph.nodes
            if n.op == "QuantizeLinear" and n.attrs.get("block_size", 0)}


def encodings_document(ctx: PassContext, graph: gs.Graph | None = None) -> dict:
    """`onnx_axis`: the axis of the tensor `node` quantizes along which the per-index parameters run (for nchw
    pixel groups, of the [B, C, H*W] view). `block_size` (uniform activations of a QDQ graph): 0 when `node` is a
    per-axis (or per-tensor) QuantizeLinear, else the block of its blocked form (contract item 2: parameters
    broadcast to ceil(K / block_size) blocks of the second-to-last axis; same codes)."""
    activations, weights = [], []
    blocks = _block_sizes(graph)
    for r in sorted(ctx.records, key=lambda r: (r.module, r.role)):
        tq = r.params
        common = {"module": r.module, "role": r.role, "tensor": r.tensor, "node": r.node, "quantizer": r.quantizer,
                  "bits": r.bits, "axis": r.axis, "onnx_axis": r.onnx_axis}
        if r.role == "weight":
            weights.append({**common, "quantized_tensor": weight_names(r.tensor)["quantized"], "storage": r.storage,
                            "channels": r.groups, "symmetric": False,
                            "scale": _list(tq.scale.astype(np.float32)), "zero_point": _list(tq.zero_point)})
            continue
        entry = {**common, "groups": r.groups, "storage": "uint8", "bos_split": r.bos_split}
        if r.quantizer == "uniform":
            entry["block_size"] = blocks.get(r.node, 0)
        if r.quantizer == "log2":
            entry["dynamic_scale"] = bool(tq.dynamic)
            entry["scale_rule"] = ("max(A[..., 1:]) per call" if r.bos_split else "max(A) per call") if tq.dynamic \
                else "scale[step]"
            entry["code_rule"] = "q = clamp(round(-log2(x / s)), 0, 2^bits - 1); x_hat = s * 2^-q"
            if not tq.dynamic:
                entry["scale"] = _list(tq.scale.astype(np.float32))
        else:
            entry["scale"] = _list(tq.scale.astype(np.float32))          # [T][G]
            entry["zero_point"] = _list(tq.zero_point)                   # [T][G]
            entry["group_map"] = None if tq.group_map is None else _list(tq.group_map)  # [T or 1][N]
            entry["group_map_shared"] = tq.group_map is not None and tq.group_map.shape[0] == 1
        activations.append(entry)
    return {"format": FORMAT, "version": VERSION, "timesteps": [int(t) for t in ctx.recipe.timesteps],
            "step_index": {"tensor": STEP_INDEX, "schedule": SCHEDULE,
                           "rule": "argmin |schedule - timestep|, ties to the lower index"},
            "activations": activations, "weights": weights}


class WriteEncodings(Pass):
    name = "write_encodings"

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        doc = encodings_document(ctx, graph)
        ctx.artifacts[ENCODINGS_NAME] = json.dumps(doc, indent=None, separators=(",", ":"), sort_keys=True) + "\n"
        return graph
