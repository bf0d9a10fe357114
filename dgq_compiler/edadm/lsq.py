"""Learned activation step sizes (LSQ, Esser et al. 2020) for block reconstruction: an option beside AdaRound.

The input quantizer of each layer in a block keeps the recipe's grid (bits, groups, group map, zero points) and
learns its step sizes: s = s0 * exp(u) per [T, G] table entry, u starting at 0 (the recipe's scales), so the
optimiser moves each step by a ratio whatever its magnitude. The forward pass is the contract's uniform quantizer
with a straight-through round, q = clamp(round(x / s) + z, 0, 2^b - 1), x_hat = (q - z) * s, which gives LSQ's
gradient for s (the rounding error inside the range, the clipping bound outside it) and the clipped
straight-through gradient for x. Steps no calibration call uses keep their scales. The text embedding's <start>
row stays FP (exclude_bos), as in the fake-quant reference.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch


class LearnedSteps(torch.nn.Module):
    """One recipe input quantizer (`tq`, uniform) with learnable step sizes."""

    def __init__(self, tq):
        super().__init__()
        self.tq = tq
        self.register_buffer("initial", torch.from_numpy(np.asarray(tq.scale, np.float32)))
        self.register_buffer("zero", torch.from_numpy(np.asarray(tq.zero_point, np.float32)))
        self.u = torch.nn.Parameter(torch.zeros_like(self.initial))
        self.levels = 2 ** tq.bits - 1

    def scales(self) -> torch.Tensor:
        return self.initial * torch.exp(self.u)

    def forward(self, x: torch.Tensor, step: int, fq) -> torch.Tensor:
        """x fake-quantized at `step`, the table rows laid out against x as the recipe's quantizers are
        (fq: the applied dgq_compiler.fakequant.FakeQuant, its group_layout)."""
        index, shape = fq.group_layout(self.tq, step, x)
        s, z = self.scales()[step], self.zero[step]
        if index is not None:
            s, z = s[index], z[index]
        s, z = s.reshape(shape), z.reshape(shape)
        v = x / s
        q = torch.clamp(v + (torch.round(v) - v).detach() + z, 0, self.levels)
        return (q - z) * s

    def hook(self, fq):
        """A forward pre-hook for the layer whose input this is; `fq.steps.index` is the current calibrated step."""
        def pre(_module, args):
            x = args[0]
            if self.tq.exclude_bos:
                return (torch.cat([x[:, :1], self(x[:, 1:], fq.steps.index, fq)], dim=1), *args[1:])
            return (self(x, fq.steps.index, fq), *args[1:])
        return pre

    def learned_entry(self):
        """The recipe entry with the learned step sizes (float32, as recipes store them)."""
        return replace(self.tq, scale=self.scales().detach().numpy().astype(np.float32))
