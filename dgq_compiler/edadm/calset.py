"""The calibration set: UNet inputs (latent x_t, timestep, text states) taken from FP sampling trajectories and
chosen per timestep by density and diversity (select.py). It feeds both the statistics (`dgq calibrate
--select K`) and block reconstruction (`dgq reconstruct`).

The pool is every prompt's latent at every distinct timestep of the sampler (prompt i seeded seed + i, all
prompts in one batch); the selection looks at the latents alone, as EDA-DM does. A UNet call of a chosen sample
is the classifier-free-guidance pair: [x, x] with [uncond, cond] text states.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dgq_compiler.edadm.select import match_report, select_samples
from dgq_compiler.errors import DgqError


@dataclass
class CalibrationSet:
    timesteps: list[int]            # distinct timesteps in sampling order
    latents: list[np.ndarray]       # per timestep: [k, C, H, W] chosen latents
    cond: list[np.ndarray]          # per timestep: [k, L, D] text states of their prompts
    uncond: np.ndarray              # [L, D] the unconditional text state
    prompt_indices: list[list[int]]  # per timestep: the chosen samples' prompt indices
    pool_size: int
    match: list[dict] = field(default_factory=list)  # per timestep: MatchReport.to_dict()

    def calls(self):
        """(step index, timestep, sample [2k, C, H, W], states [2k, L, D]) per timestep: the CFG UNet calls."""
        for step, t in enumerate(self.timesteps):
            x = self.latents[step]
            uncond = np.broadcast_to(self.uncond, (len(x),) + self.uncond.shape)
            yield step, t, np.concatenate([x, x]), np.concatenate([uncond, self.cond[step]])

    def summary(self) -> dict:
        """Pool, per-step counts and the mean of each match figure over the timesteps."""
        keys = self.match[0].keys() if self.match else ()
        return {"pool_per_step": self.pool_size, "chosen_per_step": len(self.latents[0]),
                "method": "density-diversity (greedy kernel MMD)",
                **{f"mean_{k}": round(float(np.mean([m[k] for m in self.match])), 6) for k in keys}}


def collect_pool(pipe, prompts: list[str], *, steps: int, guidance: float, seed: int, latent_size=None):
    """FP trajectories of every prompt -> (timesteps, {timestep: latents [P, C, H, W]}, cond [P, L, D],
    uncond [L, D]). The pipeline's current scheduler samples (calibrate.run.use_scheduler sets it)."""
    from dgq_compiler.sampling import encode_prompts, sample, torch_predictor

    pool: dict[int, list] = {}
    order: list[int] = []

    def record(_i, t, x, _states, _eps):
        key = int(round(t))
        if key not in pool:
            pool[key] = []
            order.append(key)
        if not pool[key]:  # PNDM calls one timestep twice: its first latent stands for it
            pool[key].append(x[: len(x) // 2].copy())

    seeds = [seed + i for i in range(len(prompts))]
    sample(pipe, torch_predictor(pipe.unet), prompts, seeds, steps, guidance, on_step=record, latent_size=latent_size)
    cond, uncond = encode_prompts(pipe, prompts)
    return order, {t: pool[t][0] for t in order}, cond, uncond[0]


def select_calibration_set(pipe, prompts: list[str], per_step: int, *, steps: int, guidance: float, seed: int = 0,
                           latent_size=None, selection: str = "density-diversity") -> CalibrationSet:
    """The pool of `prompts`' FP trajectories, and per timestep `per_step` samples chosen by density and
    diversity (or the first `per_step` prompts with selection='first', the baseline)."""
    if not 1 <= per_step <= len(prompts):
        raise DgqError(f"samples per step must be in 1..{len(prompts)} (the pool holds one latent per prompt and "
                       f"timestep), got {per_step}")
    if selection not in ("density-diversity", "first"):
        raise DgqError(f"selection must be density-diversity or first, got {selection!r}")
    timesteps, pool, cond, uncond = collect_pool(pipe, prompts, steps=steps, guidance=guidance, seed=seed,
                                                 latent_size=latent_size)
    latents, conds, chosen_all, match = [], [], [], []
    for t in timesteps:
        feats = pool[t].reshape(len(prompts), -1)
        chosen = select_samples(feats, per_step) if selection != "first" else list(range(per_step))
        chosen = sorted(chosen)
        latents.append(pool[t][chosen])
        conds.append(cond[chosen])
        chosen_all.append(chosen)
        match.append(match_report(feats, chosen, seed=seed).to_dict())
    return CalibrationSet(timesteps, latents, conds, uncond, chosen_all, len(prompts), match)
