"""Quantization configs: one frozen, validated, serializable dataclass and the named presets.

A config says *what* to quantize and how; calibration statistics + a config -> a recipe
(`dgq_compiler.quantize.quantize_stats`). The method name is the family (DGQ, MixDQ or a baseline);
the fields fix the behaviour, and a baseline's fields are checked to be that baseline's.
MixDQ's two features are fields any method may use: `text_bos_fp` (the <start> row of the text
embedding at cross-attention to_k/to_v inputs stays FP) and the mixed-precision budgets
`mixed_weight_bits` / `mixed_act_bits` (per-layer widths chosen by `dgq allocate`; the recipe then
needs an allocation file). Method `mixdq` alone is per-tensor and linear like TFMQ, with both features.
`mixed_fp` lets the allocation also leave a layer in full precision (weights and input unquantized, counted at
MIXED_FP_BITS in every budget, zero sensitivity): the issue's "or FP for the most sensitive layers", opt-in.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from dgq_compiler.errors import DgqError

METHODS = ("dgq", "qdiffusion", "tfmq", "mixdq")
ATTN_QUANTIZERS = ("log2", "uniform")
WEIGHT_METHODS = ("minmax", "mse")
DIMENSIONS = ("auto", "channel", "pixel")
GROUP_COUNTS = (1, 2, 4, 8, 16, 32)
BIT_RANGE = (4, 8)
MIXED_WEIGHT_CHOICES = (4, 8)     # the widths a mixed-precision allocation picks from, per layer
MIXED_ACT_CHOICES = (6, 8)
MIXED_FP_BITS = 32                # a layer an allocation leaves FP: weights and input at 32 bits in the budgets


@dataclass(frozen=True)
class QuantConfig:
    method: str = "dgq"               # dgq | qdiffusion | tfmq (baselines are per-tensor linear)
    weight_bits: int = 8              # 4 or 8, per output channel, asymmetric
    act_bits: int = 8                 # 4..8, activations (inputs of Conv/Linear, q, k, v)
    groups: int = 8                   # G in {1, 2, 4, 8, 16, 32}; 1 = per tensor
    per_step: bool = True             # False: one set of scales for all timesteps (Q-Diffusion)
    shared_group_map: bool = False    # hardware variant: one group map for all steps, per-step scales
    dimension: str = "auto"           # grouping dimension: auto (the metric V_d) or forced
    attn_quantizer: str = "log2"      # attention probabilities: log2 or uniform (at attn_bits)
    attn_bits: int | None = None      # None: the activation width (the paper's fair comparison)
    log_dynamic: bool = True          # log2 scale = max of the probs at inference; False: calibrated
    exclude_bos: bool = True          # cross-attention: <start> column of the probs, k/v row 0 stay FP
    weight_method: str = "minmax"     # minmax | mse (range shrink search)
    mse_candidates: int = 80          # MSE search: shrink factors 1, 1 - 1/n, ...
    mse_norm: float = 2.4             # MSE search: the Lp norm minimized
    kmeans_seed: int = 0              # K-means++ initialisation seed
    kmeans_iters: int = 50
    text_bos_fp: bool = False         # MixDQ: <start> row of the text embedding at attn2 to_k/to_v inputs stays FP
    mixed_weight_bits: float | None = None  # MixDQ: average weight bits per parameter (a size budget), per-layer 4/8
    mixed_act_bits: float | None = None     # MixDQ: average activation bits per MAC of Conv/Linear inputs, 6/8
    reconstruct: bool = False         # EDA-DM: weights from block reconstruction (dgq_compiler.edadm), composed
    mixed_fp: bool = False            # MixDQ: the allocation may also leave a layer FP (W32A32 in the budgets)

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise DgqError(f"quantization config: {what}")

        for name in ("weight_bits", "act_bits", "groups", "mse_candidates", "kmeans_seed", "kmeans_iters"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, got {value!r}")
        for name in ("per_step", "shared_group_map", "log_dynamic", "exclude_bos", "text_bos_fp", "reconstruct",
                     "mixed_fp"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        need(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        need(self.weight_bits in (4, 8), f"weight_bits must be 4 or 8, got {self.weight_bits}")
        need(BIT_RANGE[0] <= self.act_bits <= BIT_RANGE[1], f"act_bits must be in 4..8, got {self.act_bits}")
        if self.attn_bits is not None:
            need(isinstance(self.attn_bits, int) and BIT_RANGE[0] <= self.attn_bits <= BIT_RANGE[1],
                 f"attn_bits must be null or in 4..8, got {self.attn_bits!r}")
        need(self.groups in GROUP_COUNTS, f"groups must be one of {GROUP_COUNTS}, got {self.groups}")
        need(self.dimension in DIMENSIONS, f"dimension must be one of {', '.join(DIMENSIONS)}, got {self.dimension!r}")
        need(self.attn_quantizer in ATTN_QUANTIZERS,
             f"attn_quantizer must be one of {', '.join(ATTN_QUANTIZERS)}, got {self.attn_quantizer!r}")
        need(self.weight_method in WEIGHT_METHODS,
             f"weight_method must be one of {', '.join(WEIGHT_METHODS)}, got {self.weight_method!r}")
        need(1 <= self.mse_candidates <= 99, f"mse_candidates must be in 1..99 (range shrinks by 1% each), "
                                             f"got {self.mse_candidates}")
        need(isinstance(self.mse_norm, (int, float)) and self.mse_norm > 0, f"mse_norm must be > 0, got {self.mse_norm!r}")
        need(self.kmeans_iters >= 1, f"kmeans_iters must be at least 1, got {self.kmeans_iters}")
        need(not (self.shared_group_map and self.groups == 1), "shared_group_map needs groups > 1")
        need(self.per_step or not self.shared_group_map, "shared_group_map needs per_step scales")
        self._check_mixed(need)
        if self.method == "mixdq":  # MixDQ alone: per-tensor linear activations, the text embedding BOS-aware
            need(self.groups == 1, f"method mixdq is per tensor: groups must be 1, got {self.groups}")
            need(self.attn_quantizer == "uniform", "method mixdq quantizes attention linearly (attn_quantizer 'uniform')")
            need(self.text_bos_fp, "method mixdq keeps the text embedding's <start> row FP (text_bos_fp true)")
        elif self.method != "dgq":  # the baselines as the paper ran them: per-tensor linear everywhere
            need(self.groups == 1, f"method {self.method} is per tensor: groups must be 1, got {self.groups}")
            need(self.attn_quantizer == "uniform", f"method {self.method} quantizes attention linearly "
                                                   "(attn_quantizer 'uniform')")
            need(not self.exclude_bos, f"method {self.method} does not separate the <start> token (exclude_bos false)")
            need(self.per_step == (self.method == "tfmq"),
                 f"method {self.method} uses {'per-step' if self.method == 'tfmq' else 'one set of'} scales "
                 f"(per_step {str(self.method == 'tfmq').lower()})")

    def _check_mixed(self, need) -> None:
        lo_w, hi_w = MIXED_WEIGHT_CHOICES
        lo_a, hi_a = MIXED_ACT_CHOICES
        for name, lo, hi in (("mixed_weight_bits", lo_w, hi_w), ("mixed_act_bits", lo_a, hi_a)):
            value = getattr(self, name)
            if value is not None:
                need(isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi,
                     f"{name} must be null or an average width in {lo}..{hi}, got {value!r}")
        if self.mixed_weight_bits is not None:
            need(self.weight_bits == lo_w, f"mixed_weight_bits picks {lo_w} or {hi_w} per layer: weight_bits must be "
                                           f"{lo_w} (the narrowest choice), got {self.weight_bits}")
        need(not self.mixed_fp or self.mixed, "mixed_fp (FP as an allocation choice) needs a mixed-precision budget "
                                              "(mixed_weight_bits or mixed_act_bits)")
        if self.mixed_act_bits is not None:
            need(self.act_bits == hi_a, f"mixed_act_bits picks {lo_a} or {hi_a} per layer: act_bits must be {hi_a} "
                                        f"(the widest; attention operands keep it), got {self.act_bits}")

    @property
    def mixed(self) -> bool:
        """Per-layer widths from an allocation (dgq allocate) instead of one width for every layer."""
        return self.mixed_weight_bits is not None or self.mixed_act_bits is not None

    @property
    def attention_bits(self) -> int:
        return self.act_bits if self.attn_bits is None else self.attn_bits

    @property
    def name(self) -> str:
        """A short label, e.g. dgq-w8a8-g8, tfmq-w4a6, mixdq-w5a8 (average widths), dgq-mixdq-w5a8-g8,
        dgq-mixdq-edadm-w5a8-g8 (with reconstructed weights), mixdq-w5a8-fp (FP allowed in the allocation)."""
        w = _width(self.mixed_weight_bits) if self.mixed_weight_bits is not None else str(self.weight_bits)
        a = _width(self.mixed_act_bits) if self.mixed_act_bits is not None else str(self.act_bits)
        family = "dgq-mixdq" if self.method == "dgq" and self.mixed else self.method
        family += "-edadm" if self.reconstruct else ""
        base = f"{family}-w{w}a{a}"
        base = f"{base}-g{self.groups}{'-shared' if self.shared_group_map else ''}" if self.method == "dgq" else base
        return base + ("-fp" if self.mixed_fp else "")

    def to_dict(self) -> dict:
        """The fields; `mixed_fp` only when set, so every config without it (all presets before it existed) writes
        byte-identical recipes and reports."""
        data = asdict(self)
        if not self.mixed_fp:
            del data["mixed_fp"]
        return data

    @classmethod
    def from_dict(cls, data) -> "QuantConfig":
        if not isinstance(data, dict):
            raise DgqError(f"quantization config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DgqError(f"quantization config has unknown field(s) {', '.join(unknown)}: "
                           f"expected some of {', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes) -> "QuantConfig":
        return QuantConfig.from_dict({**self.to_dict(), **changes})


def _width(value: float) -> str:
    """5.0 -> '5', 5.5 -> '5.5' (preset names)."""
    return f"{float(value):g}"


def _build_presets() -> dict[str, QuantConfig]:
    presets: dict[str, QuantConfig] = {}
    for w, a in ((8, 8), (8, 6), (4, 8), (4, 6)):
        weights = "minmax" if w == 8 else "mse"  # 4-bit weights need the range search; same for every method
        for g in GROUP_COUNTS:
            presets[f"dgq-w{w}a{a}-g{g}"] = QuantConfig("dgq", w, a, g, weight_method=weights)
            if g > 1:
                presets[f"dgq-w{w}a{a}-g{g}-shared"] = QuantConfig("dgq", w, a, g, shared_group_map=True,
                                                                   weight_method=weights)
        presets[f"qdiffusion-w{w}a{a}"] = QuantConfig("qdiffusion", w, a, 1, per_step=False, attn_quantizer="uniform",
                                                      exclude_bos=False, weight_method=weights)
        presets[f"tfmq-w{w}a{a}"] = QuantConfig("tfmq", w, a, 1, per_step=True, attn_quantizer="uniform",
                                                exclude_bos=False, weight_method=weights)
    # MixDQ alone (per-tensor, per-step, BOS-aware text embedding) and composed with DGQ's groups;
    # mixed widths need an allocation (dgq allocate); mixdq-w8a8 / mixdq-w4a8 are its uniform counterparts
    mixdq = dict(method="mixdq", groups=1, per_step=True, attn_quantizer="uniform", exclude_bos=False,
                 text_bos_fp=True, weight_method="mse")
    for w, a in ((8, 8), (4, 8)):
        presets[f"mixdq-w{w}a{a}"] = QuantConfig(weight_bits=w, act_bits=a, **mixdq)
    for avg_w, avg_a in ((5, None), (6, None), (5, 7)):
        mixed = dict(weight_bits=4, act_bits=8, mixed_weight_bits=float(avg_w),
                     mixed_act_bits=None if avg_a is None else float(avg_a))
        config = QuantConfig(**mixdq, **mixed)
        presets[config.name] = config
        for g in (8,):
            config = QuantConfig("dgq", groups=g, text_bos_fp=True, weight_method="mse", **mixed)
            presets[config.name] = config
    # FP as a width in the allocation (opt-in: the presets above are unchanged)
    for name in ("mixdq-w5a8", "dgq-mixdq-w5a8-g8"):
        config = presets[name].replace(mixed_fp=True)
        presets[config.name] = config
    # the compositions with EDA-DM's reconstructed weights: DGQ groups (+ MixDQ widths), MixDQ alone
    for config in (presets["dgq-w4a8-g8"], presets["dgq-mixdq-w5a8-g8"], presets["mixdq-w5a8"]):
        config = config.replace(reconstruct=True)
        presets[config.name] = config
    return presets


PRESETS = _build_presets()
PRESET_NAMES = tuple(PRESETS)
DEFAULT_PRESET = "dgq-w8a8-g8"


def preset(name: str) -> QuantConfig:
    """A named config, e.g. dgq-w8a8-g8, dgq-w4a6-g16-shared, qdiffusion-w8a8, tfmq-w4a8."""
    if name not in PRESETS:
        raise DgqError(f"unknown preset {name!r}: expected dgq-w{{8,4}}a{{8,6}}-g{{1..32}}[-shared], "
                       "qdiffusion-wXaY, tfmq-wXaY, mixdq-wXaY or dgq-mixdq-wXaY-g8 "
                       "(see `dgq quantize --list-presets`)")
    return PRESETS[name]


def load_config(path: str | Path) -> QuantConfig:
    """A config from a JSON file (the fields of QuantConfig; missing fields take their defaults)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DgqError(f"config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DgqError(f"config file {str(path)!r} is not valid JSON: {exc}") from None
    return QuantConfig.from_dict(data)


def resolve_config(name_or_path: str) -> QuantConfig:
    """A preset name or a config JSON file."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if name_or_path.endswith(".json") or Path(name_or_path).is_file():
        return load_config(name_or_path)
    return preset(name_or_path)
