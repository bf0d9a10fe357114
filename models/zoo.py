"""Architecture configs as data, and UNets built from them (on the meta device when no weights are needed)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from models.errors import ModelError

ZOO_NAMES = ("sd-v1.4", "sd-v2.1", "sdxl-base", "sdxl-turbo", "tiny")
ALIASES = {"sd-v1.5": "sd-v1.4"}  # SD 1.5 has the same UNet as 1.4


def zoo_config(name: str) -> dict:
    """The diffusers UNet config of a zoo model, by name."""
    name = ALIASES.get(name, name)
    if name not in ZOO_NAMES:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(ZOO_NAMES)}")
    text = resources.files("models.configs").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def read_unet_config(path: str | Path) -> dict:
    """A user's diffusers UNet `config.json` (or a folder holding one), checked to be a UNet2DConditionModel."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"UNet config {str(path)!r} not found: expected a diffusers UNet config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"UNet config {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("_class_name") != "UNet2DConditionModel":
        found = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise ModelError(f"config {str(path)!r} is a {found!r}, expected a UNet2DConditionModel config")
    return config


def resolve_config(name_or_path: str) -> dict:
    """A zoo name, or a path to a UNet config.json / UNet folder / pipeline folder (its `unet/`)."""
    if ALIASES.get(name_or_path, name_or_path) in ZOO_NAMES:
        return zoo_config(name_or_path)
    path = Path(name_or_path)
    if path.is_dir() and (path / "unet" / "config.json").is_file():
        path = path / "unet"
    if not path.exists() and "/" not in name_or_path and not name_or_path.endswith(".json"):
        raise ModelError(f"unknown model {name_or_path!r}: expected one of {', '.join(ZOO_NAMES)} or a path")
    return read_unet_config(path)


def unet_from_config(config: dict, device: str = "meta", seed: int = 0):
    """A UNet2DConditionModel with the given config; random weights from `seed`, or meta tensors."""
    import torch
    from diffusers import UNet2DConditionModel

    try:
        if device == "meta":
            with torch.device("meta"):
                return UNet2DConditionModel.from_config(config).eval()
        torch.manual_seed(seed)
        return UNet2DConditionModel.from_config(config).to(device).eval()
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ModelError(f"UNet config cannot build a UNet2DConditionModel: {exc}") from None


def stream_random_weights(config: dict, seed: int, write, device: str = "cpu") -> list[str]:
    """Build `unet_from_config(config, "cpu", seed)`'s weights one module at a time without holding the model.

    Each parameter is handed to `write(index, tensor)` as soon as its module has finished initialising and
    then dropped, so memory holds about one module. Returns the qualified parameter names by index.

    The weights are bit for bit those of `unet_from_config`: construction runs unchanged under the same
    seed; a global parameter-registration hook only notices that a module has finished (another module
    registers a parameter) and takes its parameters out. This relies on every module initialising its own
    parameters before another module registers one, which holds for the torch.nn layers a diffusers UNet
    is made of (tested for equality). On device "meta" nothing is generated: the same calls, in the same
    order, with shapes only.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from torch.nn.modules.module import register_module_parameter_registration_hook

    pending: list = []   # (module, parameter name): registered, maybe not initialised yet
    index: dict = {}     # (id(module), parameter name) -> the index it was written under
    empty = torch.empty(0, device=device)

    def take(keep_owner=None) -> None:
        still = []
        for owner, name in pending:
            if owner is keep_owner:
                still.append((owner, name))
                continue
            param = owner._parameters.get(name)
            if param is not None:
                index[(id(owner), name)] = len(index)
                write(len(index) - 1, param.data)
                param.data = empty  # the model keeps an empty placeholder; the values are written
        pending[:] = still

    def on_register(module, name, param):
        if param is not None:
            take(keep_owner=module)
            pending.append((module, name))

    state = torch.random.get_rng_state()
    handle = register_module_parameter_registration_hook(on_register)
    try:
        torch.manual_seed(seed)
        try:
            with torch.device(device):
                unet = UNet2DConditionModel.from_config(config)
        except (TypeError, ValueError, KeyError, AssertionError) as exc:
            raise ModelError(f"UNet config cannot build a UNet2DConditionModel: {exc}") from None
        take()
    finally:
        handle.remove()
        torch.random.set_rng_state(state)
    names = [""] * len(index)
    for prefix, module in unet.named_modules():
        for name, param in module._parameters.items():
            if param is not None:
                names[index[(id(module), name)]] = f"{prefix}.{name}" if prefix else name
    return names


def save_random_unet(config: dict, seed: int, folder: str | Path) -> None:
    """Write a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors) holding
    `unet_from_config(config, "cpu", seed)`'s weights, generated and written one tensor at a time.

    A dry run on the meta device gives every tensor's name, shape and place in the file before any value
    exists, so the safetensors header comes first and each tensor is written once, at its offset.
    """
    import struct

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shapes: list = []
    names = stream_random_weights(config, seed, lambda _i, t: shapes.append(tuple(t.shape)), device="meta")
    header, offset, offsets = {}, 0, []
    for name, shape in zip(names, shapes):
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offsets.append(offset)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(folder / "diffusion_pytorch_model.safetensors", "wb") as sink:
        sink.write(struct.pack("<Q", len(text)) + text)
        start = sink.tell()

        def write(index, tensor):
            sink.seek(start + offsets[index])
            sink.write(tensor.detach().float().contiguous().numpy().tobytes())

        if stream_random_weights(config, seed, write) != names:
            raise ModelError("random weights were generated in a different order than the dry run")
    saved = {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
    (folder / "config.json").write_text(json.dumps(dict(saved, _class_name="UNet2DConditionModel"), indent=2) + "\n",
                                        encoding="utf-8")
