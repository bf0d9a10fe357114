"""Calibration statistics files: a JSON manifest `foo.json` + arrays `foo.safetensors` (same stem).

Arrays are named `<module>/<role>/<stat>`, float32, first axis = calibrated step:
  input, q, k, v:  channel_min/channel_max [T, C], pixel_min/pixel_max [T, N] (absent for [B, C] inputs);
                   cross-attention k/v: channel stats over tokens 1.. and bos_channel_min/max [T, C] for token 0,
                   pixel stats over all tokens;
  attn_probs:      key_max [T, Nk] (per key column, the max over queries, heads and batch);
                   cross-attention also bos_mass_min/bos_mass_max [T, 1] (mean probability on <start> per call).
Stats whose name ends in _min merge by minimum, the others by maximum: exact and order-free, so
shards of a prompt set merge into the statistics of one run, byte for byte.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dgq_compiler.calibrate.points import QuantPoint
from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_pair_writable, manifest_file, sha256_file

FORMAT = "dgq-stats"
VERSION = 1


@dataclass(frozen=True, eq=False)
class CalibrationStats:
    model_name: str
    config_sha256: str
    timesteps: tuple[int, ...]
    resolution: tuple[int, int]
    sampling: dict                      # scheduler, steps, guidance, seed, negative prompt, prompt set hash/size
    prompt_indices: tuple[int, ...]     # which prompts of the set ran (shards hold disjoint parts)
    points: tuple[QuantPoint, ...]
    arrays: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        return len(self.timesteps)

    def get(self, point: QuantPoint, stat: str) -> np.ndarray | None:
        return self.arrays.get(f"{point.module}/{point.role}/{stat}")

    def point(self, module: str, role: str) -> QuantPoint:
        for p in self.points:
            if (p.module, p.role) == (module, role):
                return p
        raise DgqError(f"statistics have no point ({module}, {role})")

    def manifest(self, arrays_name: str, arrays_sha256: str) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "model": {"name": self.model_name, "config_sha256": self.config_sha256},
                "timesteps": list(self.timesteps), "resolution": list(self.resolution),
                "sampling": self.sampling, "prompt_indices": list(self.prompt_indices),
                "points": [asdict(p) for p in self.points], "arrays": arrays_name, "arrays_sha256": arrays_sha256}

    def save(self, path_json: str | Path, overwrite: bool = False) -> Path:
        from safetensors.numpy import save_file

        path = manifest_file(path_json, "statistics")
        arrays_path = path.with_suffix(".safetensors")
        check_pair_writable(path, overwrite)
        self.validate(f"statistics for {str(path)!r}")  # never write what `load` would refuse (e.g. guidance inf)
        with atomic_path(arrays_path) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(self.arrays.items())}, str(tmp))
            digest = sha256_file(tmp)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.manifest(arrays_path.name, digest), indent=1, sort_keys=True) + "\n",
                           encoding="utf-8")
        return path

    @classmethod
    def load(cls, path_json: str | Path) -> "CalibrationStats":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = manifest_file(path_json, "statistics")
        what = f"statistics {str(path)!r}"
        if not path.is_file():
            raise DgqError(f"{what} not found")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DgqError(f"{what} is not valid JSON (truncated?): {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DgqError(f"{what} is not a dgq statistics file")
        if doc.get("version") != VERSION:
            raise DgqError(f"{what} has version {doc.get('version')!r}; this dgq reads version {VERSION}")
        fields_ = _manifest_fields(doc, what)
        arrays_path = path.parent / doc["arrays"]
        if not arrays_path.is_file():
            raise DgqError(f"{what}: its arrays file {str(arrays_path)!r} is missing")
        if sha256_file(arrays_path) != doc["arrays_sha256"]:
            raise DgqError(f"{what}: {str(arrays_path)!r} does not match the manifest's sha256 (truncated or modified)")
        try:
            arrays = load_file(str(arrays_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DgqError(f"{what}: cannot read {str(arrays_path)!r}: {exc}") from None
        stats = cls(*fields_, arrays=arrays)
        stats.validate(what)
        return stats

    def validate(self, what: str = "statistics") -> None:
        """Every point's arrays present, one row per step, finite, and every minimum at most its maximum
        (swapped or corrupted statistics would give scales of 1e-8 and a graph that quantizes nothing well)."""
        t = len(self.timesteps)
        for p in self.points:
            base = f"{p.module}/{p.role}/"
            needed = ("key_max",) if p.role == "attn_probs" else ("channel_min", "channel_max")
            for stat in needed:
                if base + stat not in self.arrays:
                    raise DgqError(f"{what}: array {base + stat!r} is missing")
        for name, array in sorted(self.arrays.items()):
            if array.shape[:1] != (t,):
                raise DgqError(f"{what}: array {name!r} has {array.shape[0] if array.ndim else 0} steps, expected T = {t}")
            if not np.all(np.isfinite(array)):
                raise DgqError(f"{what}: array {name!r} has {int(np.size(array) - np.isfinite(array).sum())} "
                               "non-finite values (NaN or inf), expected finite statistics")
            if name.endswith("_min") and name[:-4] + "_max" in self.arrays:
                high = self.arrays[name[:-4] + "_max"]
                if high.shape != array.shape:
                    raise DgqError(f"{what}: arrays {name!r} {list(array.shape)} and {name[:-4] + '_max'!r} "
                                   f"{list(high.shape)} differ in shape")
                if np.any(array > high):
                    raise DgqError(f"{what}: array {name!r} exceeds {name[:-4] + '_max'!r} at "
                                   f"{int(np.count_nonzero(array > high))} places, expected min <= max "
                                   "(swapped or corrupted statistics)")


def _manifest_fields(doc: dict, what: str) -> tuple:
    """The constructor fields of a statistics manifest, each checked for type and range (one line per problem)."""
    def need(ok, field_, expected):
        if not ok:
            value = doc.get(field_) if "." not in field_ else None
            raise DgqError(f"{what}: field {field_!r} must be {expected}"
                           + (f", got {json.dumps(value)[:60]}" if value is not None else ""))

    def int_list(value, low=0):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                                               for v in value)

    for key in ("model", "timesteps", "resolution", "sampling", "prompt_indices", "points", "arrays", "arrays_sha256"):
        need(key in doc, key, "present (missing from the manifest)")
    model = doc["model"]
    need(isinstance(model, dict) and isinstance(model.get("name"), str) and model.get("name"), "model",
         "an object with a non-empty 'name'")
    need(isinstance(model.get("config_sha256"), str), "model", "an object with a 'config_sha256' string")
    need(int_list(doc["timesteps"]) and doc["timesteps"] and len(set(doc["timesteps"])) == len(doc["timesteps"]),
         "timesteps", "a non-empty list of distinct non-negative integers")
    need(int_list(doc["resolution"], low=1) and len(doc["resolution"]) == 2, "resolution",
         "[height, width], two positive integers")
    sampling = doc["sampling"]
    need(isinstance(sampling, dict), "sampling", "an object (scheduler, steps, guidance, seed, ...)")
    guidance = sampling.get("guidance")
    need(guidance is None or (isinstance(guidance, (int, float)) and np.isfinite(guidance)), "sampling.guidance",
         "a finite number")
    need(int_list(doc["prompt_indices"]) and len(set(doc["prompt_indices"])) == len(doc["prompt_indices"]),
         "prompt_indices", "a list of distinct non-negative integers")
    need(isinstance(doc["arrays"], str) and doc["arrays"] and "/" not in doc["arrays"], "arrays",
         "the file name of the arrays beside the manifest")
    need(isinstance(doc["arrays_sha256"], str) and len(doc["arrays_sha256"]) == 64, "arrays_sha256",
         "the 64-digit sha256 of the arrays file")
    try:
        points = tuple(QuantPoint(**p) for p in doc["points"])
    except TypeError as exc:
        raise DgqError(f"{what}: field 'points' must be a list of quantization points ({exc})") from None
    for p in points:
        need(isinstance(p.module, str) and isinstance(p.role, str) and isinstance(p.channels, int)
             and isinstance(p.pixels, int) and p.channels >= 1 and p.pixels >= 0, "points",
             f"points with a module, a role and non-negative channel/pixel counts (bad: {p.module!r})")
    return (model["name"], model["config_sha256"], tuple(doc["timesteps"]), tuple(doc["resolution"]), sampling,
            tuple(doc["prompt_indices"]), points)


def merge_stats(parts: list[CalibrationStats]) -> CalibrationStats:
    """Statistics of the union of the shards' prompts (exact: elementwise min/max)."""
    if not parts:
        raise DgqError("nothing to merge: give at least one statistics file")
    first = parts[0]
    seen = set(first.prompt_indices)
    for i, other in enumerate(parts[1:], start=2):
        for label, a, b in (("model", first.config_sha256, other.config_sha256),
                            ("timestep schedule", first.timesteps, other.timesteps),
                            ("resolution", first.resolution, other.resolution),
                            ("sampling settings", first.sampling, other.sampling),
                            ("quantization points", first.points, other.points),
                            ("arrays", sorted(first.arrays), sorted(other.arrays))):
            if a != b:
                raise DgqError(f"cannot merge statistics: part {i} has another {label} than part 1")
        overlap = seen & set(other.prompt_indices)
        if overlap:
            raise DgqError(f"cannot merge statistics: part {i} repeats prompt(s) {sorted(overlap)[:5]} "
                           "(shards must hold disjoint prompts)")
        seen |= set(other.prompt_indices)
    arrays = {}
    for name in first.arrays:
        reduce = np.minimum if name.endswith("_min") else np.maximum
        merged = first.arrays[name]
        for other in parts[1:]:
            merged = reduce(merged, other.arrays[name])
        arrays[name] = np.ascontiguousarray(merged, dtype=np.float32)
    return CalibrationStats(first.model_name, first.config_sha256, first.timesteps, first.resolution, first.sampling,
                            tuple(sorted(seen)), first.points, arrays)
