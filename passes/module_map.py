"""The module map: every Conv/Gemm/MatMul node of an exported UNet <-> its diffusers module path and roles.

The legacy exporter renames and transposes weights (`onnx::MatMul_1234`), but node names keep the
module scope (`/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`), so the
scope is the key. Attention matmuls are told apart by structure: QK^T feeds a Softmax, A.V reads one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from passes.errors import PassError
from passes.graph_query import GraphIndex

MODULE_MAP_VERSION = 1
SCOPE_ROOT = "unet"  # the export wrapper's attribute name, dropped from module paths
_PASS_THROUGH = {"Cast", "Identity", "Mul", "Add", "Div", "Where"}


@dataclass(frozen=True)
class ModuleEntry:
    node: str          # ONNX node name
    op_type: str       # Conv | Gemm | MatMul
    kind: str          # conv | linear | attn_qk | attn_av | matmul
    module: str        # diffusers module path, e.g. down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k
    inputs: dict       # tensor role -> ONNX tensor name: input/weight/bias, or q/k, or attn_probs/v
    weight_layout: str = ""  # "out_in" (Conv, Gemm transB=1) or "in_out" (MatMul, Gemm transB=0)


def module_path(node_name: str) -> str:
    """`/unet/down_blocks.0/resnets.0/conv1/Conv` -> `down_blocks.0.resnets.0.conv1`."""
    parts = [p for p in node_name.split("/") if p]
    if parts and parts[0] == SCOPE_ROOT:
        parts = parts[1:]
    return ".".join(parts[:-1])


def _attention_kind(node, index: GraphIndex) -> str:
    frontier = [node.output[0]]
    for _ in range(4):  # QK^T -> (Mul scale) -> (Add mask) -> (Cast) -> Softmax
        nxt = []
        for tensor in frontier:
            for user in index.users(tensor):
                if user.op_type == "Softmax":
                    return "attn_qk"
                if user.op_type in _PASS_THROUGH:
                    nxt.extend(user.output)
        frontier = nxt
    tensor = node.input[0]
    for _ in range(3):  # Softmax -> (Cast) -> A.V
        producer = index.producer.get(tensor)
        if producer is None:
            break
        if producer.op_type == "Softmax":
            return "attn_av"
        if producer.op_type not in ("Cast", "Identity"):
            break
        tensor = producer.input[0]
    return "matmul"


def build_module_map(model: onnx.ModelProto) -> list[ModuleEntry]:
    """One entry per Conv/Gemm/MatMul node, in graph order."""
    graph = model.graph
    index = GraphIndex(graph)
    entries = []
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        if not n.name:
            raise PassError(f"a {n.op_type} node has no name: the module map needs scoped node names")
        module = module_path(n.name)
        if n.op_type == "MatMul" and n.input[1] not in index.initializers:
            kind = _attention_kind(n, index)
            roles = ({"q": n.input[0], "k": n.input[1]} if kind == "attn_qk"
                     else {"attn_probs": n.input[0], "v": n.input[1]} if kind == "attn_av"
                     else {"a": n.input[0], "b": n.input[1]})
            entries.append(ModuleEntry(n.name, n.op_type, kind, module, roles))
            continue
        roles = {"input": n.input[0], "weight": n.input[1]}
        if len(n.input) > 2 and n.input[2]:
            roles["bias"] = n.input[2]
        if n.op_type == "Conv":
            kind, layout = "conv", "out_in"
        elif n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            kind, layout = "linear", ("out_in" if trans_b else "in_out")
        else:
            kind, layout = "linear", "in_out"
        entries.append(ModuleEntry(n.name, n.op_type, kind, module, roles, layout))
    return entries


def save_module_map(entries: list[ModuleEntry], path: str | Path) -> None:
    doc = {"format": "dgq-module-map", "version": MODULE_MAP_VERSION, "entries": [asdict(e) for e in entries]}
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load_module_map(path: str | Path) -> list[ModuleEntry]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PassError(f"module map {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != "dgq-module-map":
        raise PassError(f"{str(path)!r} is not a dgq module map")
    if doc.get("version") != MODULE_MAP_VERSION:
        raise PassError(f"module map {str(path)!r} has version {doc.get('version')!r}, expected {MODULE_MAP_VERSION}")
    return [ModuleEntry(**e) for e in doc["entries"]]
