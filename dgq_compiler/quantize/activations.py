"""Activation quantizers from calibration statistics: DGQ groups, per-tensor baselines, attention probabilities.

DGQ per point (DESIGN.md section 4): the dimension metric V_d = (max M - min M) + (max m - min m) on
statistics pooled over steps picks channel or pixel; per step, K-means on (m_i, M_i) groups the indices;
each group's scale/zero point come from its absolute min/max (always including 0, so z is on the grid).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dgq_compiler.quantize.kmeans import kmeans_labels
from dgq_compiler.recipe import TensorQuant

MIN_SCALE = 1e-8


def uniform_params(lo, hi, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric unsigned grid covering [min(lo, 0), max(hi, 0)]: scale float32, zero point int32."""
    qmax = 2 ** bits - 1
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    scale = np.maximum((hi - lo) / qmax, MIN_SCALE)
    zero = np.clip(np.rint(-lo / scale), 0, qmax)
    return scale.astype(np.float32), zero.astype(np.int32)


def dimension_metric(lo: np.ndarray, hi: np.ndarray) -> float:
    """V_d for one dimension from per-index minima m_i (lo) and maxima M_i (hi)."""
    if lo.size == 0:
        return -np.inf
    return float((hi.max() - hi.min()) + (lo.max() - lo.min()))


@dataclass(frozen=True)
class Features:
    """Per-step (min, max) of each index along channel and pixel, as the quantizer will see the tensor."""
    channel_lo: np.ndarray           # [T, C]
    channel_hi: np.ndarray
    pixel_lo: np.ndarray | None      # [T, N] or None (no pixel axis)
    pixel_hi: np.ndarray | None

    @property
    def tensor_lo(self) -> np.ndarray:
        return self.channel_lo.min(axis=1)

    @property
    def tensor_hi(self) -> np.ndarray:
        return self.channel_hi.max(axis=1)


def point_features(stats, point, exclude_bos: bool) -> Features:
    """The statistics of one point; cross-attention k/v: tokens 1.. only when <start> stays FP."""
    get = lambda name: stats.get(point, name)  # noqa: E731
    c_lo, c_hi, p_lo, p_hi = get("channel_min"), get("channel_max"), get("pixel_min"), get("pixel_max")
    if point.cross and point.role in ("k", "v"):
        if exclude_bos:
            p_lo, p_hi = p_lo[:, 1:], p_hi[:, 1:]
        else:
            c_lo = np.minimum(c_lo, get("bos_channel_min"))
            c_hi = np.maximum(c_hi, get("bos_channel_max"))
    return Features(c_lo, c_hi, p_lo, p_hi)


def choose_dimension(feat: Features, forced: str = "auto") -> tuple[str, dict]:
    """'channel' or 'pixel' and the metric values, on statistics pooled over steps."""
    v = {"channel": dimension_metric(feat.channel_lo.min(0), feat.channel_hi.max(0))}
    if feat.pixel_lo is not None and feat.pixel_lo.shape[1] > 0:
        v["pixel"] = dimension_metric(feat.pixel_lo.min(0), feat.pixel_hi.max(0))
    if forced != "auto":
        return (forced if forced in v else "channel"), v
    return ("pixel" if v.get("pixel", -np.inf) > v["channel"] else "channel"), v


def group_tables(lo: np.ndarray, hi: np.ndarray, labels: np.ndarray, groups: int, bits: int):
    """Scale/zero point [G] for one step's groups; groups with no members take the whole tensor's range."""
    g_lo = np.full(groups, lo.min())
    g_hi = np.full(groups, hi.max())
    for g in np.unique(labels):
        members = labels == g
        g_lo[g], g_hi[g] = lo[members].min(), hi[members].max()
    return uniform_params(g_lo, g_hi, bits)


def dgq_activation(point, feat: Features, config) -> tuple[TensorQuant, dict]:
    """Group quantizer of one point (G = config.groups; G = 1 is per tensor, per step)."""
    bits, t = config.act_bits, feat.channel_lo.shape[0]
    cross_kv = point.cross and point.role in ("k", "v") and config.exclude_bos
    if config.groups == 1:
        tq, info = per_tensor_activation(point, feat, config)
        return tq, info
    axis, metric = choose_dimension(feat, config.dimension)
    lo, hi = (feat.channel_lo, feat.channel_hi) if axis == "channel" else (feat.pixel_lo, feat.pixel_hi)
    groups = min(config.groups, lo.shape[1])
    cluster = lambda a, b: kmeans_labels(np.stack([a, b], axis=1), groups, config.kmeans_seed,  # noqa: E731
                                         config.kmeans_iters)
    scales, zeros, maps = [], [], []
    if not config.per_step:  # one map and one scale row for every step
        labels = cluster(lo.min(0), hi.max(0))
        s, z = group_tables(lo.min(0), hi.max(0), labels, groups, bits)
        scales, zeros, maps = [s] * t, [z] * t, [labels]
    elif config.shared_group_map:  # clustered once on pooled stats; scales per step
        labels = cluster(lo.min(0), hi.max(0))
        maps = [labels]
        for step in range(t):
            s, z = group_tables(lo[step], hi[step], labels, groups, bits)
            scales.append(s)
            zeros.append(z)
    else:
        for step in range(t):
            labels = cluster(lo[step], hi[step])
            s, z = group_tables(lo[step], hi[step], labels, groups, bits)
            scales.append(s)
            zeros.append(z)
            maps.append(labels)
    tq = TensorQuant(point.module, point.role, "uniform", bits, axis, np.stack(scales), np.stack(zeros),
                     np.stack(maps), exclude_bos=cross_kv)
    return tq, {"axis": axis, "groups": groups, "metric": metric}


def per_tensor_activation(point, feat: Features, config) -> tuple[TensorQuant, dict]:
    """One scale per step (TFMQ-like, DGQ G=1) or one for all steps (Q-Diffusion-like)."""
    lo, hi = feat.tensor_lo, feat.tensor_hi
    if not config.per_step:
        lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
    s, z = uniform_params(lo, hi, config.act_bits)
    cross_kv = point.cross and point.role in ("k", "v") and config.exclude_bos
    tq = TensorQuant(point.module, point.role, "uniform", config.act_bits, "tensor", s[:, None], z[:, None],
                     exclude_bos=cross_kv)
    return tq, {"axis": "tensor", "groups": 1, "metric": {}}


def text_embedding_activation(point, feat: Features, config) -> tuple[TensorQuant, dict]:
    """MixDQ's BOS-aware quantizer of the text embedding at a cross-attention's to_k/to_v input: token 0 (<start>,
    the same row for every prompt under a causal encoder, and far larger than the rest) stays FP, so the grid
    covers tokens 1.. only: per tensor (G = 1) or, with groups, token groups over tokens 1.. (the per-channel
    statistics include <start>, so channel groups are not available here)."""
    lo, hi = feat.pixel_lo[:, 1:], feat.pixel_hi[:, 1:]
    bits, t = config.act_bits, lo.shape[0]
    if not config.per_step:
        lo, hi = np.broadcast_to(lo.min(0), lo.shape), np.broadcast_to(hi.max(0), hi.shape)
    if config.groups == 1:
        s, z = uniform_params(lo.min(axis=1), hi.max(axis=1), bits)
        tq = TensorQuant(point.module, point.role, "uniform", bits, "tensor", s[:, None], z[:, None], exclude_bos=True)
        return tq, {"axis": "tensor", "groups": 1, "metric": {}, "bos": "fp"}
    groups = min(config.groups, lo.shape[1])
    scales, zeros, maps = [], [], []
    shared = None
    if config.shared_group_map or not config.per_step:
        shared = kmeans_labels(np.stack([lo.min(0), hi.max(0)], axis=1), groups, config.kmeans_seed, config.kmeans_iters)
    for step in range(t):
        labels = shared if shared is not None else kmeans_labels(np.stack([lo[step], hi[step]], axis=1), groups,
                                                                 config.kmeans_seed, config.kmeans_iters)
        s, z = group_tables(lo[step], hi[step], labels, groups, bits)
        scales.append(s)
        zeros.append(z)
        maps.append(labels)
    maps = maps[:1] if shared is not None else maps
    tq = TensorQuant(point.module, point.role, "uniform", bits, "pixel", np.stack(scales), np.stack(zeros),
                     np.stack(maps), exclude_bos=True)
    return tq, {"axis": "pixel", "groups": groups, "metric": {}, "bos": "fp"}


def attention_probs(stats, point, config) -> tuple[TensorQuant, dict]:
    """log2 (dynamic max; the static scale table is the calibrated max) or uniform at the attention width."""
    exclude = config.exclude_bos and point.cross
    key_max = stats.get(point, "key_max").astype(np.float64)  # [T, keys]
    peak = (key_max[:, 1:] if exclude else key_max).max(axis=1)
    if not config.per_step:
        peak = np.full_like(peak, peak.max())
    peak = np.maximum(peak, MIN_SCALE)
    bits, t = config.attention_bits, peak.shape[0]
    zeros = np.zeros((t, 1), dtype=np.int32)
    if config.attn_quantizer == "log2":
        tq = TensorQuant(point.module, "attn_probs", "log2", bits, "tensor", peak[:, None], zeros,
                         dynamic=config.log_dynamic, exclude_bos=exclude)
    else:
        s, z = uniform_params(np.zeros(t), peak, bits)
        tq = TensorQuant(point.module, "attn_probs", "uniform", bits, "tensor", s[:, None], z[:, None],
                         dynamic=False, exclude_bos=exclude)
    info = {"axis": f"{config.attn_quantizer}{'-dynamic' if config.attn_quantizer == 'log2' and config.log_dynamic else ''}",
            "groups": 1, "metric": {}}
    bos = stats.get(point, "bos_mass_max")
    if bos is not None:
        info["bos_mass"] = (float(stats.get(point, "bos_mass_min").min()), float(bos.max()))
    return tq, info
