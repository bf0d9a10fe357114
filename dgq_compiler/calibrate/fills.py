"""Fast paths: one tensor's statistics written straight into its slots of the call buffers.

`out` holds the destination views in stat order (min then max); two-stage fills then take their batch
[min, max] in shared scratch. Each fill gives exactly what reference_stats.py gives (min and max are exact
under any grouping of the reduced dims); each groups the reduced dims the way that is fastest for its shape
on CPU (short-row and strided reductions are slow there).
"""
from __future__ import annotations

import torch

KEY_MAX_ROWS = 256            # probs rows left after halving, before the final key_max reduce (speed only)


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _fill_nchw(x, out):
    """[B, C, H, W] with H*W >= 64: (batch, pixels) and (batch, channels) in one reduce each."""
    torch.amin(x, dim=(0, 2, 3), out=out[0])
    torch.amax(x, dim=(0, 2, 3), out=out[1])
    torch.amin(x, dim=(0, 1), out=out[2])  # [H, W] views of the flat pixel slots (h * W + w)
    torch.amax(x, dim=(0, 1), out=out[3])


def _fill_nchw_small(x, out):
    """[B, C, H, W] with few pixels: the batch first (a fast outer reduce), then channels and pixels."""
    lo, hi = torch.amin(x, dim=0, out=out[4]), torch.amax(x, dim=0, out=out[5])
    torch.amin(lo, dim=(1, 2), out=out[0])
    torch.amax(hi, dim=(1, 2), out=out[1])
    torch.amin(lo, dim=0, out=out[2])
    torch.amax(hi, dim=0, out=out[3])


def _fill_nlc(x, out):
    """[B, L, C] with wide channels."""
    torch.amin(x, dim=(-3, -2), out=out[0])
    torch.amax(x, dim=(-3, -2), out=out[1])
    torch.amin(x, dim=(-3, -1), out=out[2])
    torch.amax(x, dim=(-3, -1), out=out[3])


def _fill_nlc_narrow(x, out):
    """[B, L, C] with few channels: the batch first, then tokens and channels."""
    lo, hi = torch.amin(x, dim=0, out=out[4]), torch.amax(x, dim=0, out=out[5])
    torch.amin(lo, dim=-2, out=out[0])
    torch.amax(hi, dim=-2, out=out[1])
    torch.amin(lo, dim=-1, out=out[2])
    torch.amax(hi, dim=-1, out=out[3])


def _fill_nlc_bos(x, out):
    """Cross-attention k/v [B, L, C]: channel stats over tokens 1.., token 0 apart, token stats over all."""
    lo, hi = torch.amin(x, dim=0, out=out[6]), torch.amax(x, dim=0, out=out[7])  # [L, C] (x[:, 1:] first: slow)
    torch.amin(lo[..., 1:, :], dim=-2, out=out[0])
    torch.amax(hi[..., 1:, :], dim=-2, out=out[1])
    out[2].copy_(lo[..., 0, :])
    out[3].copy_(hi[..., 0, :])
    torch.amin(lo, dim=-1, out=out[4])
    torch.amax(hi, dim=-1, out=out[5])


def _fill_nc(x, out):
    torch.amin(x, dim=0, out=out[0])
    torch.amax(x, dim=0, out=out[1])


def _fill_probs(probs, out):
    key_max(probs, out[0], out[1])


def _fill_probs_cross(probs, out):
    key_max(probs, out[0], out[3])
    torch.mean(probs[..., 0], out=out[1])  # the same reduction as probs[..., 0].mean()
    out[2].copy_(out[1])


TWO_STAGE = ("nchw_small", "nlc_narrow", "nlc_bos")
FILLS = {"nchw": _fill_nchw, "nchw_small": _fill_nchw_small, "nlc": _fill_nlc, "nlc_narrow": _fill_nlc_narrow,
         "nlc_bos": _fill_nlc_bos, "nc": _fill_nc, "probs": _fill_probs, "probs_cross": _fill_probs_cross}


def fill_kind(role: str, shape, cross: bool) -> str | None:
    """The FILLS entry that reproduces the reference partials for a tensor of `shape` (None: generic)."""
    if role == "attn_probs":
        return ("probs_cross" if cross else "probs") if len(shape) == 3 else None
    if len(shape) == 4:
        return "nchw" if shape[2] * shape[3] >= 64 else "nchw_small"
    if len(shape) == 3:
        if cross and role in ("k", "v"):
            return "nlc_bos"
        return "nlc_narrow" if shape[2] <= 32 else "nlc"
    return "nc" if len(shape) == 2 else None


def key_max(probs, out, tree):
    """Max over (batch*heads, queries) per key column. With a key count off the vector width the strided reduce
    is slow: elementwise maxima of row halves shrink it first (`tree`: `key_max_tree`)."""
    if tree is None:
        torch.amax(probs, dim=(0, 1), out=out)
        return
    first, halvings, last = tree
    top, bottom = probs.reshape(-1, probs.shape[-1]).chunk(2)
    torch.maximum(top, bottom, out=first)
    for top, bottom, dest in halvings:
        torch.maximum(top, bottom, out=dest)
    torch.amax(last, dim=0, out=out)


def key_max_rows(shape) -> list[int]:
    """Row counts after each halving `key_max` does for probs of `shape` ([]: it reduces directly)."""
    rows, counts = numel(shape[:-1]), []
    if shape[-1] % 8:
        while rows > KEY_MAX_ROWS and rows % 2 == 0:
            rows //= 2
            counts.append(rows)
    return counts


def key_max_tree(shape, scratch):
    """The halving steps of `key_max` as views of `scratch` (its first rows): (first, [(top, bottom, dest)], last)."""
    counts = key_max_rows(shape)
    if not counts:
        return None
    width = shape[-1]
    level = scratch[:counts[0] * width].view(counts[0], width)
    first, halvings = level, []
    for rows in counts[1:]:
        top, bottom = level[:rows], level[rows:2 * rows]
        level = top  # in place: each level's maxima overwrite its top half
        halvings.append((top, bottom, level))
    return first, halvings, level
