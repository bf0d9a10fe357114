"""Metric-decoupled sensitivity: one layer quantized at a time, scored on content or on text alignment.

For every quantizable Conv/Linear and each candidate width (weights 4/8 with activations FP; its input 6/8 with
weights FP), the UNet runs a few recorded FP calls (a few calibration prompts, steps spread over the schedule)
with only that tensor fake-quantized (torch, the recipe's own arithmetic: dgq_compiler/fakequant.py). Two
relative errors against the FP noise prediction of the same calls:
  content    sum |eps_q - eps|^2 / sum |eps|^2                         (the whole prediction, cond and uncond)
  alignment  sum |g_q - g|^2 / sum |g|^2,  g = eps_cond - eps_uncond    (the text-conditioned guidance direction)
Text-carrying layers (a cross-attention's to_k / to_v: their weights and the text embedding they read) are
scored on alignment, the rest on content; each class is normalised on its own (divided by the class's total
error at the narrowest widths), so a handful of alignment-critical layers are not drowned out by the many
content layers. When the budget does not choose input widths (no `mixed_act_bits`: every input stays at 8
bits) only the weights are measured and the inputs' sensitivities are recorded as 0 (`measured` says which),
which halves the work. The table is JSON (format dgq-sensitivity), written atomically.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dgq_compiler.config import MIXED_ACT_CHOICES, MIXED_WEIGHT_CHOICES, QuantConfig
from dgq_compiler.errors import DgqError
from dgq_compiler.io import check_writable, read_format_doc, write_format_doc
from dgq_compiler.recipe import Recipe, reads_text_embedding

FORMAT = "dgq-sensitivity"
VERSION = 1
METRICS = ("content", "alignment")


def text_carrying(module: str) -> bool:
    """A cross-attention's key/value projection: it reads only the text embedding."""
    return reads_text_embedding(module, "input")


@dataclass(frozen=True)
class LayerSensitivity:
    module: str
    metric: str                 # content | alignment: the score the allocation uses
    params: int                 # weight elements (the size budget counts them)
    macs: int                   # multiply-accumulates of one UNet call at batch 2 (the BOPs budget counts them)
    weight: dict                # bits (str) -> normalised sensitivity of the weights at that width
    act: dict                   # bits (str) -> normalised sensitivity of the input activation
    raw: dict = field(default_factory=dict)  # "w4"/"a6"/... -> {"content": e, "alignment": e} relative errors


@dataclass(frozen=True)
class SensitivityTable:
    model_name: str
    config_sha256: str
    config: str                 # the base configuration the candidates were quantized with (its name)
    calls: int                  # recorded UNet calls each layer was measured on
    prompts: int
    layers: tuple               # LayerSensitivity, in module order
    normaliser: dict            # metric -> the class total the raw errors were divided by
    measured: tuple = ("weight", "input")  # what was quantized one layer at a time (else recorded as 0)

    def by_module(self) -> dict:
        return {layer.module: layer for layer in self.layers}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        path = check_writable(path, overwrite=overwrite)
        doc = {"format": FORMAT, "version": VERSION,
               "model": {"name": self.model_name, "config_sha256": self.config_sha256},
               "config": self.config, "calls": self.calls, "prompts": self.prompts, "normaliser": self.normaliser,
               "measured": list(self.measured),
               "layers": [asdict(layer) for layer in self.layers]}
        return write_format_doc(path, doc)

    @classmethod
    def load(cls, path: str | Path) -> "SensitivityTable":
        path = Path(path)
        what = f"sensitivity table {str(path)!r}"
        doc = read_format_doc(path, what, "sensitivity table", FORMAT, VERSION)
        try:
            layers = tuple(LayerSensitivity(**entry) for entry in doc["layers"])
            table = cls(doc["model"]["name"], doc["model"]["config_sha256"], doc["config"], doc["calls"],
                        doc["prompts"], layers, doc["normaliser"], tuple(doc.get("measured", ("weight", "input"))))
        except (KeyError, TypeError) as exc:
            raise DgqError(f"{what} is missing or has a malformed field: {exc}") from None
        for layer in table.layers:
            ok = layer.metric in METRICS and isinstance(layer.params, int) and layer.params > 0 and \
                isinstance(layer.macs, int) and layer.macs >= 0 and \
                sorted(layer.weight) == sorted(map(str, MIXED_WEIGHT_CHOICES)) and \
                sorted(layer.act) == sorted(map(str, MIXED_ACT_CHOICES)) and \
                all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0
                    for v in [*layer.weight.values(), *layer.act.values()])
            if not ok:
                raise DgqError(f"{what}: layer {layer.module!r} needs metric content|alignment, params > 0, macs >= 0 "
                               f"and finite sensitivities >= 0 for weights {MIXED_WEIGHT_CHOICES} and activations "
                               f"{MIXED_ACT_CHOICES}")
        if not table.layers:
            raise DgqError(f"{what} has no layers")
        return table


def layer_macs(unet, resolution) -> dict:
    """Conv/Linear MACs of one UNet call at batch 2 (cond + uncond), from the cost model's counting (one source)."""
    from simulator.cost.macs_from_config import inventory_from_config

    inventory = inventory_from_config(dict(unet.config), batch=2, resolution=int(resolution[0]) * 8)
    return {op.module: op.macs for op in inventory.ops if op.kind in ("conv", "linear")}


def record_calls(pipe, prompts, seeds, steps: int, guidance: float, count: int, latent_size=None) -> list:
    """`count` FP UNet calls spread over the schedule (first, ..., last) of one sampling run of `prompts`."""
    from dgq_compiler.report.analysis import UNetCall
    from dgq_compiler.sampling import sample, torch_predictor

    calls = []
    sample(pipe, torch_predictor(pipe.unet), list(prompts), list(seeds), steps, guidance, latent_size=latent_size,
           on_step=lambda i, t, x, s, e: calls.append(UNetCall(i, t, x, s, e)))
    keep = sorted({int(round(i)) for i in np.linspace(0, len(calls) - 1, max(1, min(count, len(calls))))})
    return [calls[i] for i in keep]


def call_errors(unet, calls) -> dict:
    """Relative content and alignment errors of the UNet as it is now against the calls' FP predictions."""
    import torch

    from dgq_compiler.sampling import guidance_direction

    num = {"content": 0.0, "alignment": 0.0}
    den = {"content": 0.0, "alignment": 0.0}
    with torch.no_grad():
        for c in calls:
            eps = unet(torch.from_numpy(c.sample), torch.tensor([c.timestep], dtype=torch.float32),
                       torch.from_numpy(c.states), return_dict=False)[0].double().numpy()
            ref = c.eps.astype(np.float64)
            num["content"] += float(np.sum((eps - ref) ** 2))
            den["content"] += float(np.sum(ref ** 2))
            g, g_ref = guidance_direction(eps), guidance_direction(ref)
            num["alignment"] += float(np.sum((g - g_ref) ** 2))
            den["alignment"] += float(np.sum(g_ref ** 2))
    return {k: num[k] / max(den[k], 1e-30) for k in num}


def measure(pipe, stats, config: QuantConfig, calls, progress: bool = False, prompts: int = 0,
            inputs: bool | None = None) -> SensitivityTable:
    """Every quantizable layer's sensitivity at the candidate widths (see the module docstring). `inputs`: also
    measure the input activations (default: when the config's budget chooses input widths)."""
    from tqdm import tqdm

    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.quantize import quantize_stats

    unet = pipe.unet.float().eval()
    base = config.replace(mixed_weight_bits=None, mixed_act_bits=None, mixed_fp=False)
    narrow, wide = MIXED_WEIGHT_CHOICES[0], MIXED_WEIGHT_CHOICES[-1]
    low_a, high_a = MIXED_ACT_CHOICES[0], MIXED_ACT_CHOICES[-1]
    candidates = {}
    for w, a in ((narrow, low_a), (wide, high_a)):
        recipe, _ = quantize_stats(stats, base.replace(weight_bits=w, act_bits=a), unet)
        candidates[(w, a)] = recipe
    modules = sorted(m for (m, role) in candidates[(wide, high_a)].tensors if role == "weight")
    params = {name: int(mod.weight.numel()) for name, mod in unet.named_modules() if name in modules}
    macs = layer_macs(unet, stats.resolution)
    inputs = config.mixed_act_bits is not None if inputs is None else inputs
    measured = ("weight", "input") if inputs else ("weight",)
    raw = {m: {f"a{b}": {"content": 0.0, "alignment": 0.0} for b in MIXED_ACT_CHOICES} for m in modules}
    jobs = [(m, role, bits, key) for m in modules
            for role, choices, key in (("weight", MIXED_WEIGHT_CHOICES, "w"), ("input", MIXED_ACT_CHOICES, "a"))
            if role in measured for bits in choices]
    for module, role, bits, key in tqdm(jobs, desc="sensitivity", unit="layer-width", disable=not progress):
        source = candidates[(narrow, low_a)] if bits in (narrow, low_a) else candidates[(wide, high_a)]
        entry = source.tensors[(module, role)]
        single = Recipe(source.model_name, source.config_sha256, source.config, source.timesteps, source.resolution,
                        {(module, role): entry})
        with apply_recipe(unet, single, weights=role == "weight", activations=role != "weight"):
            raw[module][f"{key}{bits}"] = call_errors(unet, calls)
    metric = {m: "alignment" if text_carrying(m) else "content" for m in modules}
    normaliser = {}
    for cls in METRICS:
        members = [m for m in modules if metric[m] == cls]
        total = sum(raw[m][f"w{narrow}"][cls] + raw[m][f"a{low_a}"][cls] for m in members)
        normaliser[cls] = total if total > 0 else 1.0
    layers = tuple(LayerSensitivity(
        module=m, metric=metric[m], params=params[m], macs=int(macs.get(m, 0)),
        weight={str(b): raw[m][f"w{b}"][metric[m]] / normaliser[metric[m]] for b in MIXED_WEIGHT_CHOICES},
        act={str(b): raw[m][f"a{b}"][metric[m]] / normaliser[metric[m]] for b in MIXED_ACT_CHOICES},
        raw=raw[m]) for m in modules)
    return SensitivityTable(stats.model_name, stats.config_sha256, base.name, len(calls), prompts, layers, normaliser,
                            measured)
