"""Where an export's weights come from, one tensor at a time: a model in memory, a folder's safetensors,
or random weights generated from a seed and spilled to a scratch file.

Every source answers `names()`, `shape(name)` and `tensor(name)` (float32, CPU, contiguous), so the
export reads at most one tensor at a time whatever the model's size.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from dgq_compiler.errors import DgqError


class ModuleWeights:
    """The parameters of a torch module that is already in memory."""

    def __init__(self, module):
        self._params = dict(module.named_parameters())

    def names(self) -> list[str]:
        return list(self._params)

    def shape(self, name: str) -> tuple:
        return tuple(self._params[name].shape)

    def tensor(self, name: str):
        return self._params[name].detach().cpu().float().contiguous()


class SafetensorsWeights:
    """A diffusers UNet folder's `diffusion_pytorch_model.safetensors` (or its sharded index), read lazily."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        folder = Path(folder)
        single = folder / "diffusion_pytorch_model.safetensors"
        index = folder / "diffusion_pytorch_model.safetensors.index.json"
        if single.is_file():
            files = {None: single}
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DgqError(f"safetensors index {str(index)!r} cannot be read: {exc}") from None
            files = {shard: folder / shard for shard in sorted(set(weight_map.values()))}
        else:
            raise DgqError(f"UNet folder {str(folder)!r} has no diffusion_pytorch_model.safetensors")
        self._handles, self._where = [], {}
        try:
            for path in files.values():
                handle = safe_open(str(path), framework="pt")
                self._handles.append(handle)
                for key in handle.keys():
                    self._where[key] = handle
        except (OSError, ValueError, RuntimeError) as exc:
            raise DgqError(f"cannot read safetensors weights in {str(folder)!r}: {str(exc).splitlines()[0]}") from None

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple:
        return tuple(self._where[name].get_slice(name).get_shape())

    def tensor(self, name: str):
        return self._where[name].get_tensor(name).float().contiguous()


class SpilledWeights:
    """Random weights generated from a seed (exactly `models.zoo.unet_from_config`'s) into a scratch file."""

    def __init__(self, config: dict, seed: int, path: str | Path):
        from models.zoo import stream_random_weights

        self.path = Path(path)
        self._entries: list = []
        with open(self.path, "wb") as sink:
            def write(_index, tensor):
                data = tensor.detach().float().contiguous().numpy()
                self._entries.append((sink.tell(), tuple(data.shape)))
                sink.write(data.tobytes())
            names = stream_random_weights(config, seed, write)
        self._index = dict(zip(names, self._entries))

    def names(self) -> list[str]:
        return list(self._index)

    def shape(self, name: str) -> tuple:
        return self._index[name][1]

    def tensor(self, name: str):
        import torch

        offset, shape = self._index[name]
        count = math.prod(shape)
        data = np.fromfile(self.path, dtype=np.float32, count=count, offset=offset)
        return torch.from_numpy(data.reshape(shape))



def content_classes(source, names: list[str]) -> dict[str, int]:
    """Name -> class id (1, 2, ...) such that two names share a class exactly when their tensors are equal.

    The ONNX exporter merges initializers with equal values; tracing placeholders that carry these ids
    makes it merge exactly the same ones without seeing the weights.
    """
    classes: dict[str, int] = {}
    seen: dict[bytes, int] = {}
    for name in names:
        tensor = source.tensor(name)
        digest = hashlib.sha256(repr((str(tensor.dtype), tuple(tensor.shape))).encode())
        digest.update(tensor.numpy().tobytes())
        classes[name] = seen.setdefault(digest.digest(), len(seen) + 1)
    return classes


def module_with_weights(config: dict, source):
    """A float32 UNet built on the meta device and given the source's tensors (for the torch reference)."""
    import torch

    from models.zoo import unet_from_config

    unet = unet_from_config(config, device="meta")
    state = {name: torch.nn.Parameter(source.tensor(name), requires_grad=False) for name in source.names()}
    missing = set(dict(unet.named_parameters())) - set(state)
    if missing:
        raise DgqError(f"the weights lack {len(missing)} of the UNet's parameters, e.g. {sorted(missing)[0]!r}")
    unet.load_state_dict(state, strict=False, assign=True)
    return unet.eval()
