"""Hardware targets: the schema, shipped presets and loading of user-written target files."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from simulator.errors import SimulatorError
from simulator.targets.schema import Target, target_from_dict, load_target_file

PRESETS = ("generic-npu", "tensorrt-int8", "onnxruntime-cpu")


def load_target(name_or_path: "str | Path | Target") -> Target:
    """A preset name (generic-npu, tensorrt-int8, onnxruntime-cpu) or a path to a .json/.toml target file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    if text in PRESETS:
        data = json.loads(resources.files("simulator.targets").joinpath("presets", f"{text}.json").read_text("utf-8"))
        return target_from_dict(data, source=f"preset {text}")
    path = Path(text)
    if path.suffix.lower() not in (".json", ".toml"):
        raise SimulatorError(f"target {text!r} is neither a preset ({', '.join(PRESETS)}) nor a .json/.toml file")
    return load_target_file(path)


__all__ = ["PRESETS", "Target", "load_target", "target_from_dict"]
