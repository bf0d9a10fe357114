"""Numbers the report shows that no other stage computes: per-layer SQNR, per-step noise SNR, outlier
layers and the cross-attention probabilities. Everything is measured on this run's model and inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dgq_compiler.sampling import guidance_direction


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - test|^2); +inf when they are identical."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2))
    return snr_from_sums(float(np.sum(reference ** 2)), noise)


def guidance_snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """snr_db of the guidance direction eps_cond - eps_uncond: the part of a CFG call's prediction that guidance
    amplifies (x guidance scale) and that carries the prompt. A batch is [uncond; cond] (sampling.sample).

    Whole-prediction SNR barely weighs it: the direction is small against eps, so an error that reverses it can
    cost a few dB of noise SNR (the per-tensor W4A6 baselines of the embedded model: 20.7 dB noise SNR against
    DGQ W4A6's 24.5, but -4.7 dB guidance SNR against 3.6, and held-out alignment 0.844 against 0.974)."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return snr_db(guidance_direction(reference), guidance_direction(test))


def snr_from_sums(signal: float, noise: float) -> float:
    """snr_db from the sums of squares |ref|^2 and |ref - test|^2."""
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)


@dataclass
class UNetCall:
    """One recorded UNet call of the FP sampling loop: its inputs and the FP noise prediction."""
    step: int
    timestep: float
    sample: np.ndarray
    states: np.ndarray
    eps: np.ndarray


def layer_outputs(unet, calls: list[UNetCall], layers: list[str]) -> list[dict[str, np.ndarray]]:
    """The output of every named layer, for every call (torch forward hooks; the UNet as it is now)."""
    import torch

    modules = dict(unet.named_modules())
    captured: list[dict[str, np.ndarray]] = []
    current: dict[str, np.ndarray] = {}

    def hook(name):
        def fn(_module, _args, output):
            current[name] = output.detach().float().numpy().copy()
        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        for call in calls:
            current = {}
            with torch.no_grad():
                unet(torch.from_numpy(call.sample), torch.tensor([call.timestep], dtype=torch.float32),
                     torch.from_numpy(call.states), return_dict=False)
            captured.append(current)
    finally:
        for h in handles:
            h.remove()
    return captured


def per_layer_sqnr(unet, calls: list[UNetCall], layers: list[str], fp: list) -> dict[str, float]:
    """SQNR (dB) of each named layer's output (the UNet as it is now) against `fp` (layer_outputs of the FP UNet
    on the same calls: per call, a mapping layer -> output), over all calls. Each output is compared the moment
    it is made and dropped: at 512 px one call's layer outputs take GBs."""
    import torch

    modules = dict(unet.named_modules())
    sums = {name: [0.0, 0.0] for name in layers}   # |ref|^2, |ref - test|^2
    reference: list = [None]

    def hook(name):
        def fn(_module, _args, output):
            ref = np.asarray(reference[0][name], dtype=np.float64)
            err = ref - output.detach().double().numpy()
            sums[name][0] += float(np.sum(ref ** 2))
            sums[name][1] += float(np.sum(err ** 2))
        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        for call, fp_call in zip(calls, fp):
            reference[0] = fp_call
            with torch.no_grad():
                unet(torch.from_numpy(call.sample), torch.tensor([call.timestep], dtype=torch.float32),
                     torch.from_numpy(call.states), return_dict=False)
    finally:
        for h in handles:
            h.remove()
    return {name: snr_from_sums(*sums[name]) for name in layers}


def outlier_points(stats, role: str = "input", top: int = 2) -> list[tuple[str, str, str, float]]:
    """(module, role, dimension, ratio) of the points whose per-channel or per-pixel ranges spread most:
    ratio = the largest |range end| over the median one, at the step where it is largest."""
    rows = []
    for point in stats.points:
        if point.role != role:
            continue
        for dim in ("channel", "pixel"):
            lo, hi = stats.get(point, f"{dim}_min"), stats.get(point, f"{dim}_max")
            if lo is None or hi is None or lo.shape[1] < 4:
                continue
            extent = np.maximum(np.abs(lo), np.abs(hi))               # [T, N]
            ratio = extent.max(axis=1) / np.maximum(np.median(extent, axis=1), 1e-12)
            rows.append((point.module, point.role, dim, float(ratio.max()), int(ratio.argmax())))
    rows.sort(key=lambda r: (-r[3], r[0], r[2]))
    chosen, seen = [], set()
    for dim in ("channel", "pixel"):  # the strongest of each kind first, then the rest by strength
        for row in rows:
            if row[2] == dim and (row[0], dim) not in seen:
                chosen.append(row)
                seen.add((row[0], dim))
                break
    for row in rows:
        if len(chosen) >= top * 2:
            break
        if (row[0], row[2]) not in seen:
            chosen.append(row)
            seen.add((row[0], row[2]))
    return chosen


def cross_attention_probs(unet, call: UNetCall) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of every cross-attention in one FP call: (<start> column, all other columns)."""
    import torch

    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention

    bos, rest = [], []

    class Tap(PassThroughTap):
        def attend(self, name, probs, value, cross):
            if cross:
                p = probs.detach().float().numpy()
                bos.append(p[..., 0].ravel())
                rest.append(p[..., 1:].ravel())
            return super().attend(name, probs, value, cross)

    with tapped_attention(unet, Tap()), torch.no_grad():
        unet(torch.from_numpy(call.sample), torch.tensor([call.timestep], dtype=torch.float32),
             torch.from_numpy(call.states), return_dict=False)
    if not bos:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(bos), np.concatenate(rest)
