"""EDA-DM (Liu et al.): calibration samples chosen by density and diversity in latent space (select.py,
calset.py) and fine-grained block reconstruction with learned weight rounding (reconstruct.py, adaround.py).

The two calls a composed configuration makes (dgq_compiler/mixdq/compose.py, `dgq run`):
    calibration = calibration_for_run(pipe, prompts, run_options)       # a CalibrationSet
    recipe, report = reconstruct_recipe(recipe, pipe.unet, calibration, ReconstructOptions(seed=...))
"""
from __future__ import annotations

from dgq_compiler.edadm.reconstruct import ReconstructOptions, reconstruct_recipe

__all__ = ["ReconstructOptions", "reconstruct_recipe", "calibration_for_run"]

RUN_POOL = 16        # `dgq run`: calibration prompts in the pool
RUN_PER_STEP = 2     # latents chosen per timestep
RUN_ITERATIONS = 100  # optimiser steps per block (a few minutes on the embedded model, 2 CPU cores)


def calibration_for_run(pipe, prompts: list[str], options):
    """The calibration set of a `dgq run` (its steps, guidance, seed, latent size; the pipeline's scheduler)."""
    from dgq_compiler.edadm.calset import select_calibration_set

    pool = list(prompts)[:RUN_POOL]
    return select_calibration_set(pipe, pool, min(RUN_PER_STEP, len(pool)), steps=options.steps,
                                  guidance=options.guidance, seed=options.seed, latent_size=options.latent_size)
