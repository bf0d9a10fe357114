"""What the graph-reading commands share: the graph/target arguments, and a graph check that runs before any
work, so a truncated, empty or wrong file (or the fp32 export where a compiled graph belongs, and the other
way round) is one line naming the file and what was expected."""
from __future__ import annotations

from pathlib import Path

GRAPH_NAME = "unet.onnx"
QUANTIZER_OPS = ("QuantizeLinear", "DequantizeLinear", "QuantizeLog", "DequantizeLog")


def add_graph_and_target(p) -> None:
    p.add_argument("graph", help="compiled folder (unet.onnx) or a compiled .onnx file")
    p.add_argument("--target", default="generic-npu",
                   help="preset (generic-npu, tensorrt-int8, onnxruntime-cpu) or a target .json/.toml file")


def read_graph(path: str | Path, expect: str):
    """(graph file, its ONNX header without external weights) of an `expect` ("export" or "compiled") graph:
    a folder means its unet.onnx. Raises DgqError naming the file and what was expected."""
    import onnx
    from google.protobuf.json_format import ParseError
    from google.protobuf.message import DecodeError

    from dgq_compiler.errors import DgqError

    from dgq_compiler.import_graph import NAMES

    path = Path(path)
    wanted = "an fp32 UNet graph: the folder `dgq export` wrote, an optimum folder or an .onnx file" \
        if expect == "export" else "the folder `dgq compile` wrote or a compiled .onnx file"
    if path.is_dir():  # an export folder, or another exporter's (optimum's unet/model.onnx)
        names = NAMES if expect == "export" else (GRAPH_NAME,)
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is None:
            raise DgqError(f"no UNet graph in {str(path)!r}: looked for {', '.join(names)}; expected {wanted}")
        path = found
    what = f"graph {str(path)!r}"
    if not path.is_file():
        raise DgqError(f"{what} not found (expected {wanted})")
    if path.stat().st_size == 0:
        raise DgqError(f"{what} is empty (0 bytes; expected {wanted})")
    try:
        model = onnx.load(str(path), format="protobuf", load_external_data=False)  # whatever the file's suffix
    except (DecodeError, ParseError, ValueError, RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgqError(f"{what} is not a readable ONNX model (truncated, or another kind of file: {reason})") from None
    if not model.graph.node:
        raise DgqError(f"{what} has no nodes (expected {wanted})")
    compiled = {p.key: p.value for p in model.metadata_props}.get("dgq.compiled") == "1" or any(
        n.op_type in QUANTIZER_OPS for n in model.graph.node)
    if expect == "export" and "sample" not in [vi.name for vi in model.graph.input]:
        raise DgqError(f"{what} is not a UNet graph (no 'sample' input; expected {wanted})")
    if expect == "compiled" and not compiled:
        raise DgqError(f"{what} has no quantizers: nothing to check (it is not a compiled graph; run `dgq compile` "
                       "on it first)")
    if expect == "export" and compiled:
        raise DgqError(f"{what} is already compiled: compile the fp32 export `dgq export` wrote")
    return path, model


def quiet_onnxruntime() -> None:
    """Leave onnxruntime's own error log off: the command reports a failed run in its one line."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)  # fatal only


def ort_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's run-time error types (a graph that cannot run at the inputs a user asked for)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(getattr(state, name) for name in ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph")
                 if hasattr(state, name))
