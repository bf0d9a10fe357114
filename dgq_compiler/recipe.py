"""Recipes: the frozen quantization parameters of one UNet (what the passes turn into the graph: passes/contract.py).

On disk: `foo.json` (the manifest, written last) and `foo.safetensors` (the arrays, written first); the
manifest records the arrays' sha256, so a truncated, swapped or edited array file is caught on load.
Keyed by (module path, role); carries the calibrated timestep schedule and the QuantConfig that made it.
(About 350 lines: the format, its save/load and its field-by-field validation belong together, so that a
reader sees in one file everything a recipe file may and may not contain.)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dgq_compiler.config import QuantConfig
from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable, manifest_file, sha256_file
from passes.contract import FP_MODULES, ROLES

FORMAT = "dgq-recipe"
VERSION = 1
ACTIVATION_AXES = ("tensor", "channel", "pixel")


@dataclass(frozen=True, eq=False)
class TensorQuant:
    module: str
    role: str
    quantizer: str          # uniform | log2
    bits: int
    axis: str               # tensor | channel | pixel ; weights: out_channel
    scale: np.ndarray       # float32: activations [T, G], weights [C_out]
    zero_point: np.ndarray  # int32, same shape
    group_map: np.ndarray | None = None  # int32 [T, N] or [1, N]; None for tensor/out_channel
    dynamic: bool = True
    exclude_bos: bool = False
    codes: np.ndarray | None = None  # weights only: int8 codes in the torch weight's layout [C_out, ...], e.g.
                                     # learned rounding (dgq_compiler/edadm); None: round(w / s) + z at compile

    def __post_init__(self):
        object.__setattr__(self, "scale", np.ascontiguousarray(self.scale, dtype=np.float32))
        if self.codes is not None:
            object.__setattr__(self, "codes", np.ascontiguousarray(self.codes))
        object.__setattr__(self, "zero_point", np.ascontiguousarray(self.zero_point, dtype=np.int32))
        if self.group_map is not None:
            object.__setattr__(self, "group_map", np.ascontiguousarray(self.group_map, dtype=np.int32))
        problem = self._problem()
        if problem:
            raise DgqError(f"recipe entry ({self.module}, {self.role}): {problem}")

    @property
    def groups(self) -> int:
        return int(self.scale.shape[-1]) if self.role != "weight" else 1

    @property
    def shared_map(self) -> bool:
        return self.group_map is not None and self.group_map.shape[0] == 1

    def _problem(self) -> str:
        if self.role not in ROLES:
            return f"role must be one of {', '.join(ROLES)}, got {self.role!r}"
        if self.quantizer not in ("uniform", "log2"):
            return f"quantizer must be uniform or log2, got {self.quantizer!r}"
        if self.quantizer == "log2" and self.role != "attn_probs":
            return "the log2 quantizer is for attention probabilities only"
        if not isinstance(self.bits, int) or not 4 <= self.bits <= 8:
            return f"bits must be in 4..8, got {self.bits!r}"
        if self.scale.shape != self.zero_point.shape:
            return f"scale {self.scale.shape} and zero_point {self.zero_point.shape} shapes differ"
        if not np.all(np.isfinite(self.scale)) or not np.all(self.scale > 0):
            return "scales must be finite and positive"
        if self.role == "weight":
            if self.axis != "out_channel" or self.scale.ndim != 1 or self.group_map is not None:
                return "weights are per output channel: axis 'out_channel', scale [C_out], no group map"
            lo, hi = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        else:
            if self.axis not in ACTIVATION_AXES:
                return f"axis must be one of {', '.join(ACTIVATION_AXES)}, got {self.axis!r}"
            if self.scale.ndim != 2 or self.scale.shape[0] < 1 or self.scale.shape[1] < 1:
                return f"activation scale must be [T, G], got shape {self.scale.shape}"
            g = self.scale.shape[1]
            if self.axis == "tensor":
                if g != 1 or self.group_map is not None:
                    return "axis 'tensor' needs G = 1 and no group map"
            else:
                if self.group_map is None or self.group_map.ndim != 2:
                    return f"axis {self.axis!r} needs a group map [T, N] or [1, N]"
                if self.group_map.shape[0] not in (1, self.scale.shape[0]):
                    return f"group map has {self.group_map.shape[0]} rows, expected 1 or T = {self.scale.shape[0]}"
                if self.group_map.size and (self.group_map.min() < 0 or self.group_map.max() >= g):
                    return f"group map indices must be in 0..{g - 1}"
            lo, hi = 0, 2 ** self.bits - 1
        if self.zero_point.size and (self.zero_point.min() < lo or self.zero_point.max() > hi):
            return f"zero points must be in {lo}..{hi}"
        if self.codes is not None:
            if self.role != "weight":
                return "codes are for weights only"
            if self.codes.dtype != np.int8 or self.codes.ndim < 2 or self.codes.shape[0] != self.scale.shape[0]:
                return (f"codes must be int8 [C_out = {self.scale.shape[0]}, ...], got {self.codes.dtype} "
                        f"{list(self.codes.shape)}")
            if self.codes.size and (self.codes.min() < lo or self.codes.max() > hi):
                return f"codes must be in {lo}..{hi} ({self.bits}-bit signed)"
        if self.exclude_bos and self.role not in ("k", "v", "attn_probs") and \
                not reads_text_embedding(self.module, self.role):
            return ("exclude_bos applies to k, v and attn_probs of a cross-attention and to the text embedding at "
                    "its to_k/to_v inputs only")
        return ""

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"scale": self.scale, "zero_point": self.zero_point}
        if self.group_map is not None:
            out["group_map"] = self.group_map
        if self.codes is not None:
            out["codes"] = self.codes
        return out

    def __eq__(self, other) -> bool:
        if not isinstance(other, TensorQuant):
            return NotImplemented
        same_meta = (self.module, self.role, self.quantizer, self.bits, self.axis, self.dynamic, self.exclude_bos) == \
                    (other.module, other.role, other.quantizer, other.bits, other.axis, other.dynamic, other.exclude_bos)
        a, b = self.arrays(), other.arrays()
        return same_meta and a.keys() == b.keys() and all(
            a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


@dataclass(frozen=True, eq=False)
class Recipe:
    model_name: str
    config_sha256: str
    config: QuantConfig
    timesteps: tuple[int, ...]
    resolution: tuple[int, int]
    tensors: dict[tuple[str, str], TensorQuant] = field(default_factory=dict)
    fp_modules: tuple[str, ...] = FP_MODULES

    def __post_init__(self):
        if not _integers(self.timesteps) or len(self.timesteps) == 0 or min(self.timesteps) < 0:
            raise DgqError(f"recipe: timesteps must be a non-empty list of non-negative integers, got "
                           f"{_shown(self.timesteps)}")
        if not _integers(self.resolution) or len(self.resolution) != 2 or min(self.resolution) < 1:
            raise DgqError(f"recipe: resolution must be [H, W], two positive integers, got {_shown(self.resolution)}")
        object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        object.__setattr__(self, "resolution", tuple(int(r) for r in self.resolution))
        object.__setattr__(self, "fp_modules", tuple(self.fp_modules))
        if len(set(self.timesteps)) != len(self.timesteps):
            raise DgqError(f"recipe: timesteps must be distinct, got {list(self.timesteps)}")
        if not isinstance(self.config, QuantConfig):
            raise DgqError("recipe: config must be a QuantConfig")
        t = len(self.timesteps)
        for key, tq in self.tensors.items():
            if key != (tq.module, tq.role):
                raise DgqError(f"recipe: entry keyed {key} holds ({tq.module}, {tq.role})")
            if tq.module in self.fp_modules or tq.module.split(".")[0] in self.fp_modules:
                raise DgqError(f"recipe: module {tq.module} is listed as FP (fp_modules) but has a quantizer")
            if tq.role != "weight" and tq.scale.shape[0] != t:
                raise DgqError(f"recipe entry ({tq.module}, {tq.role}): scale table has {tq.scale.shape[0]} rows, "
                               f"expected T = {t} (one per calibrated timestep)")
            if tq.group_map is not None and tq.group_map.shape[0] not in (1, t):
                raise DgqError(f"recipe entry ({tq.module}, {tq.role}): group map has {tq.group_map.shape[0]} "
                               f"rows, expected 1 or T = {t}")

    @property
    def T(self) -> int:
        return len(self.timesteps)

    def check_pixel_counts(self) -> None:
        """Every pixel group map covers the pixels of one resolution level of the recipe's latent (UNet recipes;
        checked on load, so an entry whose axis was switched from channel to pixel fails there)."""
        counts = _pixel_counts(self.resolution)
        for (module, role), tq in sorted(self.tensors.items()):
            if tq.axis == "pixel" and not _text_tokens(tq) and tq.group_map.shape[1] not in counts:
                raise DgqError(f"recipe entry ({module}, {role}): its pixel group map covers {tq.group_map.shape[1]} "
                               f"pixels, but a {self.resolution[0]}x{self.resolution[1]} latent has "
                               f"{', '.join(map(str, sorted(counts, reverse=True)))} at its resolution levels "
                               "(axis switched from channel?)")

    def step_index(self, timestep) -> int:
        """Index of the nearest calibrated timestep (ties -> the lower index), in float32 like the ONNX graph."""
        schedule = np.asarray(self.timesteps, dtype=np.float32)
        diff = np.abs(schedule - np.float32(float(timestep)))
        return int(np.argmin(diff))  # argmin returns the first minimum: the lower index on ties

    def modules(self) -> list[str]:
        return sorted({m for m, _ in self.tensors})

    def __eq__(self, other) -> bool:
        if not isinstance(other, Recipe):
            return NotImplemented
        return (self.model_name, self.config_sha256, self.config, self.timesteps, self.resolution,
                self.fp_modules) == (other.model_name, other.config_sha256, other.config, other.timesteps,
                                     other.resolution, other.fp_modules) \
            and self.tensors.keys() == other.tensors.keys() \
            and all(self.tensors[k] == other.tensors[k] for k in self.tensors)

    # ---------------------------------------------------------------- files
    def save(self, path_json: str | Path, overwrite: bool = False) -> Path:
        """Write `<stem>.safetensors` then the manifest `<stem>.json`, each atomically."""
        from safetensors.numpy import save_file

        manifest_path = manifest_file(path_json, "recipe")
        arrays_path = manifest_path.with_suffix(".safetensors")
        check_writable(manifest_path, overwrite)
        check_writable(arrays_path, overwrite)
        arrays, entries = {}, []
        for module, role in sorted(self.tensors):
            tq = self.tensors[(module, role)]
            names = {}
            for kind, array in tq.arrays().items():
                names[kind] = f"{module}/{role}/{kind}"
                arrays[names[kind]] = array
            entries.append({"module": module, "role": role, "quantizer": tq.quantizer, "bits": tq.bits,
                            "axis": tq.axis, "groups": tq.groups, "dynamic": tq.dynamic,
                            "exclude_bos": tq.exclude_bos, "arrays": names,
                            "shapes": {k: list(a.shape) for k, a in tq.arrays().items()}})
        with atomic_path(arrays_path) as tmp:
            save_file(arrays, str(tmp))  # no metadata: safetensors orders it at random
            digest = sha256_file(tmp)
        manifest = {"format": FORMAT, "version": VERSION,
                    "model": {"name": self.model_name, "config_sha256": self.config_sha256},
                    "config": self.config.to_dict(), "timesteps": list(self.timesteps),
                    "resolution": list(self.resolution), "fp_modules": list(self.fp_modules),
                    "arrays": arrays_path.name, "arrays_sha256": digest, "tensors": entries}
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return manifest_path

    @classmethod
    def load(cls, path_json: str | Path, unet_config: dict | None = None) -> "Recipe":
        """Read and validate a recipe; with `unet_config`, also check it was made for that UNet."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        manifest_path = manifest_file(path_json, "recipe")
        what = f"recipe {str(manifest_path)!r}"
        if not manifest_path.is_file():
            raise DgqError(f"{what} not found")
        try:
            doc = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DgqError(f"{what} is not valid JSON (truncated?): {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DgqError(f"{what} is not a dgq recipe (format {doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("version") != VERSION:
            raise DgqError(f"{what} has version {doc.get('version')!r}; this dgq reads version {VERSION}")
        try:
            arrays_path = manifest_path.parent / doc["arrays"]
            expected_sha, model = doc["arrays_sha256"], doc["model"]
            config = QuantConfig.from_dict(doc["config"])
            timesteps, resolution = doc["timesteps"], doc["resolution"]
            fp_modules, entries = doc["fp_modules"], doc["tensors"]
            model_name, config_sha = model["name"], model["config_sha256"]
        except (KeyError, TypeError) as exc:
            raise DgqError(f"{what} is missing field {exc}") from None
        except DgqError as exc:
            raise DgqError(f"{what}: {exc}") from None
        if not arrays_path.is_file():
            raise DgqError(f"{what}: its arrays file {str(arrays_path)!r} is missing")
        if sha256_file(arrays_path) != expected_sha:
            raise DgqError(f"{what}: {str(arrays_path)!r} does not match the manifest's sha256 "
                           "(truncated, modified or from another recipe)")
        if unet_config is not None:
            fingerprint = config_fingerprint(unet_config)
            if fingerprint != config_sha:
                raise DgqError(f"{what} was made for another model ({model_name!r}, config {config_sha[:12]}), "
                               f"not this UNet (config {fingerprint[:12]})")
        try:
            arrays = load_file(str(arrays_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DgqError(f"{what}: cannot read {str(arrays_path)!r}: {exc}") from None
        if not isinstance(entries, list) or not entries:
            raise DgqError(f"{what}: field 'tensors' must be a non-empty list of quantizers (an empty recipe "
                           "quantizes nothing)")
        tensors = {}
        try:
            for e in entries:
                names = e["arrays"]
                missing = [n for n in names.values() if n not in arrays]
                if missing:
                    raise DgqError(f"{what}: array {missing[0]!r} is missing from {arrays_path.name}")
                for kind, shape in e.get("shapes", {}).items():
                    if kind in names and list(arrays[names[kind]].shape) != list(shape):
                        raise DgqError(f"{what}: array {names[kind]!r} has shape {list(arrays[names[kind]].shape)}, "
                                       f"manifest says {shape}")
                tq = TensorQuant(module=e["module"], role=e["role"], quantizer=e["quantizer"], bits=e["bits"],
                                 axis=e["axis"], scale=arrays[names["scale"]], zero_point=arrays[names["zero_point"]],
                                 group_map=arrays[names["group_map"]] if "group_map" in names else None,
                                 dynamic=e["dynamic"], exclude_bos=e["exclude_bos"],
                                 codes=arrays[names["codes"]] if "codes" in names else None)
                if (tq.module, tq.role) in tensors:
                    raise DgqError(f"{what}: entry ({tq.module}, {tq.role}) appears twice")
                tensors[(tq.module, tq.role)] = tq
            recipe = cls(model_name=model_name, config_sha256=config_sha, config=config, timesteps=timesteps,
                         resolution=resolution, tensors=tensors, fp_modules=tuple(fp_modules))
            recipe.check_pixel_counts()
            return recipe
        except (KeyError, TypeError) as exc:
            raise DgqError(f"{what}: a tensor entry is missing field {exc}") from None
        except DgqError as exc:
            message = str(exc)
            raise DgqError(message if message.startswith(what) else f"{what}: {message}") from None

    def check_unet(self, unet) -> None:
        """Every recipe module exists in `unet` and weight scales match its output channels."""
        modules = dict(unet.named_modules())
        for (module, role), tq in sorted(self.tensors.items()):
            if module not in modules:
                raise DgqError(f"recipe module {module!r} does not exist in this UNet")
            if role == "weight":
                out = modules[module].weight.shape[0]
                if tq.scale.shape[0] != out:
                    raise DgqError(f"recipe ({module}, weight) has {tq.scale.shape[0]} channel scales, "
                                   f"the UNet's weight has {out} output channels")
                if tq.codes is not None and tq.codes.shape != tuple(modules[module].weight.shape):
                    raise DgqError(f"recipe ({module}, weight) has codes of shape {list(tq.codes.shape)}, the UNet's "
                                   f"weight is {list(modules[module].weight.shape)}")


def _integers(values) -> bool:
    """A list/tuple of integers (strings such as "961,921" are not a schedule)."""
    return isinstance(values, (list, tuple, range, np.ndarray)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)


def _shown(value) -> str:
    text = json.dumps(value if isinstance(value, (str, int, float, list, dict, type(None))) else list(value)
                      if isinstance(value, tuple) else str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _pixel_counts(resolution) -> set[int]:
    """Pixels per sample at every resolution level of a UNet at this latent size (stride-2 downsampling rounds up)."""
    h, w = resolution
    counts = set()
    for _ in range(8):
        counts.add(h * w)
        h, w = -(-h // 2), -(-w // 2)
    return counts


def reads_text_embedding(module: str, role: str) -> bool:
    """The input of a cross-attention's to_k/to_v: the text embedding (diffusers names a transformer block's
    cross-attention attn2)."""
    parts = module.split(".")
    return parts[-2:-1] == ["attn2"] and parts[-1] in ("to_k", "to_v") and role == "input"


def _text_tokens(tq: TensorQuant) -> bool:
    """Entries whose pixel axis is the text tokens (a cross-attention's keys/values and their projections'
    input), not the latent's pixels."""
    return (tq.module.split(".")[-1] == "attn2" and tq.role in ("k", "v")) or reads_text_embedding(tq.module, tq.role)


def config_fingerprint(unet_config) -> str:
    """sha256 of a UNet's config: defaults filled from UNet2DConditionModel's signature, so a bare
    config.json and a loaded model's `unet.config` agree; private `_` keys dropped; sorted-key JSON."""
    import inspect

    from diffusers import UNet2DConditionModel

    config = dict(unet_config)
    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    full = {name: p.default for name, p in params.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    full.update({k: v for k, v in config.items() if k in full})
    text = json.dumps(_jsonable(full), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
