"""Loading a user's local diffusers folder: a whole pipeline or a UNet alone (safetensors only, no hub)."""
from __future__ import annotations

import json
from pathlib import Path

from models.errors import ModelError
from models.libraries import quiet_libraries

UNET_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} {str(path)!r} is not a JSON object")
    return data


def _class_name(config: dict) -> str:
    """The class a diffusers (`_class_name`) or transformers (`architectures`) config describes."""
    return config.get("_class_name") or (config.get("architectures") or ["an unknown model"])[0]


def folder_kind(path: str | Path) -> str:
    """'pipeline' (has model_index.json) or 'unet' (has a UNet config.json); a clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelError(f"model path {str(path)!r} is not a folder: expected a diffusers pipeline or UNet folder")
    if (path / "model_index.json").is_file():
        return "pipeline"
    if (path / "config.json").is_file():
        config = _read_json(path / "config.json", "config")
        if config.get("_class_name") != "UNet2DConditionModel":
            raise ModelError(f"folder {str(path)!r} holds a {_class_name(config)!r}, "
                             "expected a UNet2DConditionModel")
        return "unet"
    raise ModelError(f"folder {str(path)!r} has neither model_index.json (a pipeline) nor config.json (a UNet)")


def _check_unet_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"UNet folder {str(path)!r} is missing config.json")
    config = _read_json(path / "config.json", "UNet config")
    if config.get("_class_name") != "UNet2DConditionModel":
        raise ModelError(f"{str(path / 'config.json')!r} describes a {_class_name(config)!r}, "
                         "expected a UNet2DConditionModel")
    if not any((path / name).is_file() for name in UNET_WEIGHT_FILES):
        raise ModelError(f"UNet folder {str(path)!r} is missing diffusion_pytorch_model.safetensors "
                         "(only safetensors weights are loaded)")


def load_unet(path: str | Path):
    """The UNet of a diffusers pipeline folder (its `unet/`) or of a UNet folder, in fp32, eval mode."""
    quiet_libraries()
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if folder_kind(path) == "pipeline":
        path = path / "unet"
    _check_unet_folder(path)
    try:
        unet = UNet2DConditionModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot load the UNet from {str(path)!r}: {str(exc).splitlines()[0]}") from None
    return unet.float().eval()


def load_pipeline(path: str | Path):
    """A StableDiffusion(XL) pipeline from a local folder, fp32, no safety checker."""
    quiet_libraries()
    from diffusers import DiffusionPipeline

    path = Path(path)
    if folder_kind(path) != "pipeline":
        raise ModelError(f"folder {str(path)!r} is a UNet alone; a whole pipeline (model_index.json) is needed here")
    index = _read_json(path / "model_index.json", "pipeline index")
    for component in ("unet", "text_encoder", "tokenizer", "vae", "scheduler"):
        if component in index and not (path / component).is_dir():
            raise ModelError(f"pipeline folder {str(path)!r} is missing its {component}/ folder")
    _check_unet_folder(path / "unet")
    try:
        pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                 safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot load the pipeline from {str(path)!r}: {str(exc).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_unet(name_or_path: str, seed: int = 0):
    """A zoo name (random weights from `seed`; `tiny` is the embedded pipeline's UNet) or a local
    diffusers pipeline/UNet folder (its weights)."""
    from models.zoo import ALIASES, ZOO_NAMES, unet_from_config, zoo_config

    if name_or_path == "tiny":  # the embedded pipeline's own UNet, so "tiny" is one model everywhere
        from models.tiny_pipeline import build_tiny_pipeline

        return build_tiny_pipeline(seed).unet
    if ALIASES.get(name_or_path, name_or_path) in ZOO_NAMES:
        return unet_from_config(zoo_config(name_or_path), device="cpu", seed=seed)
    path = Path(name_or_path)
    if not path.exists() and "/" not in name_or_path and "\\" not in name_or_path:
        raise ModelError(f"unknown model {name_or_path!r}: expected one of {', '.join(ZOO_NAMES)} "
                         "or a local diffusers folder")
    return load_unet(path)
