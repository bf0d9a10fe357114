"""Arguments shared by the commands that read a compiled graph for a hardware target (check, verify)."""
from __future__ import annotations


def add_graph_and_target(p) -> None:
    p.add_argument("graph", help="compiled folder (unet.onnx) or a compiled .onnx file")
    p.add_argument("--target", default="generic-npu",
                   help="preset (generic-npu, tensorrt-int8, onnxruntime-cpu) or a target .json/.toml file")
