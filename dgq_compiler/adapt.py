"""Adapt a recipe to a hardware target (`dgq compile --target T`) and say what that gives up.

Every change keeps the range the recipe calibrated and only coarsens how it is represented:
- activation groups the target cannot take (granularity, G, pixel groups on a kxk conv, per-step maps) are
  merged into one per-tensor range per step: [min over groups of lo_g, max over groups of hi_g];
- bit widths the target lacks become the nearest width it has (preferring more bits);
- symmetric-only activations become a signed symmetric grid around 0 covering max(|lo|, |hi|) (written in
  the graph as int8 codes with zero point 0: passes/qdq.py); symmetric-only weights likewise per channel;
- no log quantizer: attention probabilities (in [0, 1]) get a uniform per-tensor quantizer at the target's
  width with the constant range [0, 1];
- no FP side branch: the cross-attention <start> token is quantized with the other tokens;
- constant scales only: the caller writes the static per-step graphs (compile's `static`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GaveUp:
    what: str          # short rule name
    tensors: int       # how many recipe entries it touched
    before: str
    after: str


def _nearest_bits(bits: int, allowed) -> int:
    allowed = sorted(allowed)
    higher = [b for b in allowed if b >= bits]
    return higher[0] if higher else allowed[-1]


def _ranges(tq) -> tuple[np.ndarray, np.ndarray]:
    """Per step and group [T, G]: the float range the uniform grid covers."""
    levels = 2 ** tq.bits - 1
    return -tq.zero_point * tq.scale, (levels - tq.zero_point) * tq.scale


def _regrid(tq, bits: int, symmetric: bool, merge: bool):
    """The same calibrated ranges on a `bits`-wide grid: per group, or merged into one range per step."""
    lo, hi = _ranges(tq)
    if merge:
        lo, hi = lo.min(axis=1, keepdims=True), hi.max(axis=1, keepdims=True)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    tiny = np.finfo(np.float32).tiny
    if symmetric:  # codes -2^(b-1)..2^(b-1)-1 around 0: zero point 2^(b-1) on the unsigned grid
        half = 2 ** (bits - 1)
        scale = np.maximum(np.maximum(-lo, hi) / (half - 1), tiny)
        zero = np.full_like(scale, half)
    else:
        scale = np.maximum((hi - lo) / (2 ** bits - 1), tiny)
        zero = np.clip(np.rint(-lo / scale), 0, 2 ** bits - 1)
    return replace(tq, bits=bits, scale=scale.astype(np.float32), zero_point=zero.astype(np.int32),
                   axis="tensor" if merge else tq.axis, group_map=None if merge else tq.group_map)


def _regrid_weights(tq, bits: int, symmetric: bool):
    """Per output channel, the old grid's range [s(-2^(b-1) - z), s(2^(b-1) - 1 - z)] on the new grid."""
    half, new_half = 2 ** (tq.bits - 1), 2 ** (bits - 1)
    lo, hi = (-half - tq.zero_point) * tq.scale, (half - 1 - tq.zero_point) * tq.scale
    tiny = np.finfo(np.float32).tiny
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / (new_half - 1), tiny)
        zero = np.zeros_like(tq.zero_point)
    else:
        scale = np.maximum((hi - lo) / (2 ** bits - 1), tiny)
        zero = np.clip(np.rint(-lo / scale) - new_half, -new_half, new_half - 1)
    codes = tq.codes
    if codes is not None:  # learned rounding: its dequantized weights re-rounded onto the new grid
        shape = (-1,) + (1,) * (codes.ndim - 1)
        w_hat = (codes - tq.zero_point.reshape(shape)) * tq.scale.reshape(shape)
        codes = np.clip(np.rint(w_hat / scale.reshape(shape)) + zero.reshape(shape), -new_half, new_half - 1)
        codes = codes.astype(np.int8)
    return replace(tq, bits=bits, scale=scale.astype(np.float32), zero_point=zero.astype(np.int32), codes=codes)


def adapt_recipe(recipe, target, kxk_modules=frozenset()):
    """(recipe for `target`, [GaveUp]) — `kxk_modules`: modules whose input feeds a kxk convolution."""
    from simulator.targets import load_target

    target = load_target(target)
    a, w, lq = target.activations, target.weights, target.log_quantizer
    steps = len(recipe.timesteps)
    counts: dict[tuple, int] = {}

    def gave(what, before, after):
        counts[(what, before, after)] = counts.get((what, before, after), 0) + 1

    tensors = {}
    for key, tq in recipe.tensors.items():
        if tq.role == "weight":
            bits = tq.bits if tq.bits in w.bits else _nearest_bits(tq.bits, w.bits)
            symmetric = w.symmetric_only and bool(np.any(tq.zero_point))
            if bits != tq.bits:
                gave("weight bits", f"W{tq.bits}", f"W{bits}")
            if symmetric:
                gave("weight zero points", "asymmetric per channel", "symmetric per channel")
            if bits != tq.bits or symmetric:
                tq = _regrid_weights(tq, bits, w.symmetric_only)
            tensors[key] = tq
            continue
        if tq.exclude_bos and not target.fp_side_branch:
            gave("<start> token", "kept FP (side branch)", "quantized with the other tokens")
            tq = replace(tq, exclude_bos=False)
        if tq.quantizer == "log2":
            if lq.supported and tq.bits in lq.bits and (not tq.dynamic or lq.dynamic_scale):
                tensors[key] = tq
                continue
            bits = _nearest_bits(tq.bits, a.bits)
            gave("attention probabilities", f"log2 {tq.bits}-bit", f"uniform {bits}-bit on [0, 1]")
            half = 2 ** (bits - 1)
            scale, zero = ((np.full((steps, 1), 1.0 / (half - 1)), np.full((steps, 1), half)) if a.symmetric_only
                           else (np.full((steps, 1), 1.0 / (2 ** bits - 1)), np.zeros((steps, 1))))
            tensors[key] = replace(tq, quantizer="uniform", bits=bits, axis="tensor", scale=scale.astype(np.float32),
                                   zero_point=zero.astype(np.int32), group_map=None, dynamic=False)
            continue
        bits = tq.bits if tq.bits in a.bits else _nearest_bits(tq.bits, a.bits)
        grouped = tq.axis != "tensor"
        merge = grouped and (tq.axis not in a.granularity or tq.groups > a.max_groups
                             or (tq.axis == "pixel" and tq.module in kxk_modules and not a.pixel_groups_kxk_conv)
                             or (tq.group_map.shape[0] > 1 and not a.per_step_group_maps))
        symmetric = a.symmetric_only and not np.all(tq.zero_point == 2 ** (tq.bits - 1))
        if merge:
            gave("activation groups", f"{tq.axis} G={tq.groups}", "per tensor")
        if bits != tq.bits:
            gave("activation bits", f"A{tq.bits}", f"A{bits}")
        if symmetric:
            gave("activation zero points", "asymmetric", "symmetric (signed grid)")
        if merge or bits != tq.bits or symmetric:
            tq = _regrid(tq, bits, a.symmetric_only, merge)
        tensors[key] = tq
    if "computed" not in a.scale_sources and steps > 1:
        gave("scale source", f"per-step scales gathered in one graph (T={steps})", f"{steps} static graphs")
    rows = [GaveUp(what, n, before, after) for (what, before, after), n in sorted(counts.items())]
    return replace(recipe, tensors=tensors), rows


def needs_static(target) -> bool:
    """The target takes only constant scales: the compile output is one graph per calibrated step."""
    from simulator.targets import load_target

    return "computed" not in load_target(target).activations.scale_sources


def kxk_conv_modules(graph_path) -> frozenset:
    """Modules of an export whose input feeds a k x k convolution (pixel groups there cost one conv per group)."""
    import onnx

    from passes.module_map import load_module_map

    model = onnx.load(str(graph_path), load_external_data=False)
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    out = set()
    for e in load_module_map(Path(graph_path).parent / "module_map.json"):
        shape = dims.get(e.inputs.get("weight", ""), [])
        if e.kind == "conv" and len(shape) == 4 and shape[2:] != [1, 1]:
            out.add(e.module)
    return frozenset(out)


def graphs_for_target(path, target, resolve) -> list[Path]:
    """What `dgq check PATH --target T` checks: a compile folder made with `--target` for a constant-scale
    target T holds its deliverables as static per-step graphs (compile.json lists them); else the one graph."""
    import json

    report = Path(path) / "compile.json"
    if Path(path).is_dir() and report.is_file() and needs_static(target):
        try:
            doc = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # an unreadable compile.json: check the folder's one graph
            doc = {}
        if isinstance(doc, dict) and doc.get("target") and doc.get("static_graphs"):
            return [Path(path) / name for name in doc["static_graphs"]]
    return [resolve(path)]
