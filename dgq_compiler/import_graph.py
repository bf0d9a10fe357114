"""UNet graphs exported by other tools (optimum-cli's unet/model.onnx) made compilable: an export-like folder.

`dgq compile` reads a `dgq export` folder (unet.onnx + module_map.json). A graph from elsewhere gets the same:
the module map is built from its node scopes (torch's exporter keeps them: `/down_blocks.0/.../to_q/MatMul`),
and a graph below opset 21 (optimum uses 14-18) is converted to 21, which the integer weights need (INT4).
Accepted: an optimum pipeline folder (its unet/model.onnx), a unet/ folder, or the .onnx file itself.
"""
from __future__ import annotations

from pathlib import Path

from dgq_compiler.errors import DgqError

OPSET = 21
NAMES = ("unet.onnx", "model.onnx", "unet/model.onnx")


def find_unet_graph(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in NAMES if (path / n).is_file()), None)
        if found is None:
            raise DgqError(f"no UNet graph in {str(path)!r} (looked for {', '.join(NAMES)})")
        path = found
    if not path.is_file():
        raise DgqError(f"graph {str(path)!r} not found (expected an export folder, an optimum folder or an .onnx file)")
    return path


def import_unet_graph(graph: Path, workdir: Path) -> Path:
    """Write `workdir`/unet.onnx (opset 21, weights inline or in one file) + module_map.json; returns the folder."""
    import onnx
    from onnx import version_converter

    from passes.module_map import build_module_map, save_module_map

    try:
        model = onnx.load(str(graph))
    except Exception as exc:  # protobuf errors, missing external data
        raise DgqError(f"{str(graph)!r} is not a readable ONNX model: {str(exc).splitlines()[0]}") from None
    if not any(i.name == "timestep" for i in model.graph.input):
        raise DgqError(f"{str(graph)!r} has no 'timestep' input: not a UNet graph")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < OPSET:
        model = version_converter.convert_version(model, OPSET)
    workdir.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000 if model.ByteSize() >= 0 else True
    onnx.save_model(model, str(workdir / "unet.onnx"), save_as_external_data=large, location="unet.onnx.data")
    save_module_map(build_module_map(model), workdir / "module_map.json")
    return workdir
