"""Statistics + config + the UNet's weights -> a frozen Recipe (DGQ or a baseline, one pipeline)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dgq_compiler.config import MIXED_FP_BITS
from dgq_compiler.errors import DgqError
from dgq_compiler.quantize.activations import (
    attention_probs,
    dgq_activation,
    per_tensor_activation,
    point_features,
    text_embedding_activation,
)
from dgq_compiler.quantize.weights import quantize_weight
from dgq_compiler.recipe import Recipe, config_fingerprint, reads_text_embedding
from passes.contract import FP_MODULES


@dataclass
class QuantizeSummary:
    """What the quantizer chose, per point: axis (or attention quantizer), group count, dimension metric."""
    rows: list = field(default_factory=list)  # (module, role, axis, groups, metric dict, extra dict)

    def axis_counts(self) -> dict:
        counts: dict = {}
        for _m, role, axis, _g, _v, _x in self.rows:
            key = (role if role in ("attn_probs",) else "activation", axis)
            counts[key] = counts.get(key, 0) + 1
        return counts


def quantize_stats(stats, config, unet, progress: bool = False,
                   widths: dict | None = None) -> tuple[Recipe, QuantizeSummary]:
    """The recipe of `config` for the UNet `stats` were calibrated on (weights from `unet`).
    `widths` {layer: (weight bits, input bits)} (a MixDQ allocation, `dgq_compiler.mixdq`) sets per-layer widths;
    a mixed-precision config needs it, and layers it does not name are refused. A layer at
    (MIXED_FP_BITS, MIXED_FP_BITS) stays in full precision: no weight or input quantizer, listed in fp_modules."""
    from tqdm import tqdm

    fingerprint = config_fingerprint(unet.config)
    if fingerprint != stats.config_sha256:
        raise DgqError(f"statistics were calibrated on another model ({stats.model_name!r}, config "
                       f"{stats.config_sha256[:12]}) than this UNet (config {fingerprint[:12]})")
    if config.mixed and widths is None:
        raise DgqError(f"config {config.name} has per-layer widths: it needs a bit allocation "
                       "(`dgq allocate`, then `dgq quantize --allocation FILE`)")
    modules = dict(unet.named_modules())
    tensors, summary, fp_layers = {}, QuantizeSummary(), []
    for point in tqdm(stats.points, desc="quantize", unit="point", disable=not progress):
        w_bits, layer_config = config.weight_bits, config
        if widths is not None and point.role == "input":
            if point.module not in widths:
                raise DgqError(f"the bit allocation has no widths for layer {point.module!r} (made for another model?)")
            w_bits, a_bits = widths[point.module]
            if w_bits == MIXED_FP_BITS and a_bits == MIXED_FP_BITS:
                fp_layers.append(point.module)
                continue
            layer_config = config.replace(act_bits=a_bits, mixed_act_bits=None)
        if point.role == "attn_probs":
            tq, info = attention_probs(stats, point, config)
        else:
            feat = point_features(stats, point, config.exclude_bos)
            if config.text_bos_fp and reads_text_embedding(point.module, point.role):
                tq, info = text_embedding_activation(point, feat, layer_config)
            elif config.method == "dgq":
                tq, info = dgq_activation(point, feat, layer_config)
            else:
                tq, info = per_tensor_activation(point, feat, layer_config)
        tensors[(tq.module, tq.role)] = tq
        summary.rows.append((tq.module, tq.role, info["axis"], info["groups"], info["metric"],
                             {k: v for k, v in info.items() if k not in ("axis", "groups", "metric")}))
        if point.role == "input":
            if point.module not in modules:
                raise DgqError(f"statistics name module {point.module!r}, which this UNet does not have")
            tensors[(point.module, "weight")] = quantize_weight(
                point.module, modules[point.module].weight, w_bits, config.weight_method,
                config.mse_candidates, config.mse_norm)
    recipe = Recipe(model_name=stats.model_name, config_sha256=stats.config_sha256, config=config,
                    timesteps=stats.timesteps, resolution=stats.resolution, tensors=tensors,
                    fp_modules=FP_MODULES + tuple(sorted(fp_layers)))
    return recipe, summary
