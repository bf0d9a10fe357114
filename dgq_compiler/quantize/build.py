"""Statistics + config + the UNet's weights -> a frozen Recipe (DGQ or a baseline, one pipeline)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dgq_compiler.errors import DgqError
from dgq_compiler.quantize.activations import attention_probs, dgq_activation, per_tensor_activation, point_features
from dgq_compiler.quantize.weights import quantize_weight
from dgq_compiler.recipe import Recipe, config_fingerprint


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


def quantize_stats(stats, config, unet, progress: bool = False) -> tuple[Recipe, QuantizeSummary]:
    """The recipe of `config` for the UNet `stats` were calibrated on (weights from `unet`)."""
    from tqdm import tqdm

    fingerprint = config_fingerprint(unet.config)
    if fingerprint != stats.config_sha256:
        raise DgqError(f"statistics were calibrated on another model ({stats.model_name!r}, config "
                       f"{stats.config_sha256[:12]}) than this UNet (config {fingerprint[:12]})")
    modules = dict(unet.named_modules())
    tensors, summary = {}, QuantizeSummary()
    for point in tqdm(stats.points, desc="quantize", unit="point", disable=not progress):
        if point.role == "attn_probs":
            tq, info = attention_probs(stats, point, config)
        else:
            feat = point_features(stats, point, config.exclude_bos)
            if config.method == "dgq":
                tq, info = dgq_activation(point, feat, config)
            else:
                tq, info = per_tensor_activation(point, feat, config)
        tensors[(tq.module, tq.role)] = tq
        summary.rows.append((tq.module, tq.role, info["axis"], info["groups"], info["metric"],
                             {k: v for k, v in info.items() if k not in ("axis", "groups", "metric")}))
        if point.role == "input":
            if point.module not in modules:
                raise DgqError(f"statistics name module {point.module!r}, which this UNet does not have")
            tensors[(point.module, "weight")] = quantize_weight(
                point.module, modules[point.module].weight, config.weight_bits, config.weight_method,
                config.mse_candidates, config.mse_norm)
    recipe = Recipe(model_name=stats.model_name, config_sha256=stats.config_sha256, config=config,
                    timesteps=stats.timesteps, resolution=stats.resolution, tensors=tensors)
    return recipe, summary
