"""The reference definition of the per-call statistics of one observed tensor (what every fast path must equal).

Per call, every tensor gives a few partials: a named statistic with its minimum (None for max-only statistics)
and maximum over the call, every tensor 1-D. Everything is min/max (or a mean kept as a min/max pair over
calls), so calls, steps and shards fold exactly.
"""
from __future__ import annotations

from typing import NamedTuple


class Partial(NamedTuple):
    stat: str           # channel | pixel | bos_channel | key_max | bos_mass
    lo: object          # torch tensor of minima, or None (max-only statistic)
    hi: object          # torch tensor of maxima


def tensor_partials(role: str, x, cross: bool) -> list[Partial]:
    """Conv/Linear inputs and q, k, v: per channel and per pixel/token min and max over the call."""
    if x.ndim == 4:
        x = x.reshape(x.shape[0], x.shape[1], -1)  # [B, C, HW]: channels, then pixels h*W + w
        lo, hi = x.amin(dim=0), x.amax(dim=0)  # over the batch (torch.aminmax(dim=0) is far slower on CPU)
        return [Partial("channel", lo.amin(dim=1), hi.amax(dim=1)), Partial("pixel", lo.amin(dim=0), hi.amax(dim=0))]
    lo, hi = x.amin(dim=0), x.amax(dim=0)
    if x.ndim == 2:  # [B, C]: no pixel axis
        return [Partial("channel", lo, hi)]
    if cross and role in ("k", "v"):  # token 0 (<start>) kept apart: it may stay FP
        return [Partial("channel", lo[1:].amin(dim=0), hi[1:].amax(dim=0)), Partial("bos_channel", lo[0], hi[0]),
                Partial("pixel", lo.amin(dim=1), hi.amax(dim=1))]
    return [Partial("channel", lo.amin(dim=0), hi.amax(dim=0)), Partial("pixel", lo.amin(dim=1), hi.amax(dim=1))]


def probs_partials(x, cross: bool) -> list[Partial]:
    """Attention probabilities [B*heads, Nq, Nk]: the max per key column (over queries); in cross-attention
    also the mean mass on the <start> column, as a (min, max) pair over calls."""
    parts = [Partial("key_max", None, x.amax(dim=1).amax(dim=0))]
    if cross:
        mass = x[..., 0].mean().reshape(1)
        parts.append(Partial("bos_mass", mass, mass))
    return parts


def partials(role: str, x, cross: bool) -> list[Partial]:
    """The partials of any observed tensor, in layout order."""
    return probs_partials(x, cross) if role == "attn_probs" else tensor_partials(role, x, cross)
