"""AdaRound (Nagel et al. 2020): learn, per weight, whether to round down or up on the recipe's grid.

On the per-output-channel grid (scale s, zero point z, b-bit signed codes) a weight w has floor f = floor(w / s)
and the rounded code q = clamp(f + h + z, -2^(b-1), 2^(b-1) - 1) with h in {0, 1}. During training h is the
rectified sigmoid h(V) = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1), V initialised so that h equals the
fractional part (the soft weight starts at w itself), and a regulariser sum(1 - |2h - 1|^beta) with beta annealed
from high to low pushes every h to 0 or 1. The result is integer codes for the recipe (TensorQuant.codes).
"""
from __future__ import annotations

import numpy as np
import torch

ZETA, GAMMA = 1.1, -0.1


class AdaRoundWeight(torch.nn.Module):
    """A parametrization of a Conv2d/Linear weight (torch.nn.utils.parametrize): the soft (or hard) dequantized
    weight on the grid of `tq` (a recipe weight entry)."""

    def __init__(self, weight: torch.Tensor, tq):
        super().__init__()
        w = weight.detach().float()
        shape = (-1,) + (1,) * (w.ndim - 1)
        self.register_buffer("scale", torch.from_numpy(tq.scale).float().reshape(shape))
        self.register_buffer("zero", torch.from_numpy(tq.zero_point.astype(np.float32)).reshape(shape))
        x = w / self.scale
        self.register_buffer("floor", torch.floor(x))
        self.register_buffer("nearest", torch.round(x) - self.floor)  # round-to-nearest's h (half to even)
        self.lo, self.hi = -(2 ** (tq.bits - 1)), 2 ** (tq.bits - 1) - 1
        rest = (x - self.floor).clamp(0.01, 0.99)  # finite V at exact grid points
        self.v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        self.hard = False
        self.fixed: torch.Tensor | None = None  # a given h (e.g. round-to-nearest) instead of V

    def h(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        if self.hard:
            return (self.v >= 0).float()
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def forward(self, _weight):
        q = torch.clamp(self.floor + self.h() + self.zero, self.lo, self.hi)
        return (q - self.zero) * self.scale

    def regulariser(self, beta: float) -> torch.Tensor:
        """Mean over weights of 1 - |2h - 1|^beta (0 when every h is 0 or 1)."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).mean()

    def codes(self, use_nearest: bool = False) -> np.ndarray:
        h = self.nearest if use_nearest else (self.v >= 0).float()
        q = torch.clamp(self.floor + h + self.zero, self.lo, self.hi)
        return q.detach().numpy().astype(np.int8)


def beta_schedule(iteration: int, total: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0) -> float:
    """AdaRound's annealing: no regularisation during warm-up (returns 0), then beta from `start` down to `end`."""
    if iteration < warmup * total:
        return 0.0
    progress = (iteration - warmup * total) / max(1.0, (1 - warmup) * total)
    return end + 0.5 * (start - end) * (1 + np.cos(np.pi * progress))
