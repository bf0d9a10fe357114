"""Weight quantizers: per output channel, asymmetric, signed grid [-2^(b-1), 2^(b-1) - 1].

min-max: the channel's range (including 0). MSE: Q-Diffusion's range search - shrink the range by
1 % steps (80 candidates: 1.00 ... 0.21) and keep, per channel, the one with the smallest mean |w - w_hat|^p
(p = 2.4); ties keep the wider range.
"""
from __future__ import annotations

import numpy as np

from dgq_compiler.recipe import TensorQuant

SMALL_LAYER = 1 << 20


def signed_params(lo, hi, bits: int):
    """torch float32 scale [C], int zero point [C] on the signed grid, range [min(lo,0), max(hi,0)]."""
    import torch

    half = 2 ** (bits - 1)
    lo = torch.clamp(lo.double(), max=0.0)
    hi = torch.clamp(hi.double(), min=0.0)
    scale = torch.clamp((hi - lo) / (2 * half - 1), min=1e-8)
    zero = torch.clamp(torch.round(-lo / scale), 0, 2 * half - 1) - half
    return scale.float(), zero.to(torch.int32)


def fake_quant_weight(w2d, scale, zero, bits: int):
    """Exactly the contract's arithmetic on [C_out, K] float32: clamp(round(w/s) + z) - z, times s."""
    import torch

    half = 2 ** (bits - 1)
    s = scale[:, None]
    z = zero[:, None].to(torch.float32)
    q = torch.clamp(torch.round(w2d / s) + z, -half, half - 1)
    return (q - z) * s


def quantize_weight(module: str, weight, bits: int, method: str = "minmax", candidates: int = 80,
                    norm: float = 2.4) -> TensorQuant:
    import torch

    threads = torch.get_num_threads()
    if weight.numel() < SMALL_LAYER:
        torch.set_num_threads(1)  # thread hand-offs cost more than they save on small layers
    try:
        return _quantize_weight(module, weight, bits, method, candidates, norm)
    finally:
        torch.set_num_threads(threads)


def _quantize_weight(module, weight, bits, method, candidates, norm) -> TensorQuant:
    import torch

    with torch.no_grad():
        w = weight.detach().to("cpu", torch.float32).reshape(weight.shape[0], -1)
        lo, hi = w.min(dim=1).values, w.max(dim=1).values
        scale, zero = signed_params(lo, hi, bits)
        if method == "mse":
            best = torch.full((w.shape[0],), float("inf"), dtype=torch.float64)
            for i in range(candidates):
                shrink = 1.0 - 0.01 * i
                s, z = signed_params(lo * shrink, hi * shrink, bits)
                err = (fake_quant_weight(w, s, z, bits) - w).abs().pow(norm).mean(dim=1).double()
                better = err < best
                best = torch.where(better, err, best)
                scale = torch.where(better, s, scale)
                zero = torch.where(better, z, zero)
    return TensorQuant(module, "weight", "uniform", bits, "out_channel", scale.numpy().astype(np.float32),
                       zero.numpy().astype(np.int32))
