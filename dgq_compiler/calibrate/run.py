"""The calibration run: the FP sampling loop of the diffusers pipeline over a prompt set, observed.

PNDM (skip_prk_steps), 25 steps by default, or any scheduler of SCHEDULERS at any step count down to 1 (few-step
models such as SDXL-Turbo: `--scheduler euler --steps 4`); classifier-free guidance 7.5 (cond + uncond in one UNet batch),
one prompt per pipeline call with the generator seeded `seed + prompt index`: a prompt's activations do
not depend on which other prompts (or shard) ran, so sharded statistics merge into one run's exactly.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from dgq_compiler.errors import DgqError

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5


def read_prompts(path: str | Path | None = None) -> list[str]:
    """One prompt per line (blank lines skipped); None: the project's 64 calibration prompts."""
    if path is None:
        text = resources.files("models.prompts").joinpath("calibration.txt").read_text(encoding="utf-8")
        where = "the built-in calibration prompts"
    else:
        path = Path(path)
        if not path.is_file():
            raise DgqError(f"prompt file {str(path)!r} not found: expected a text file with one prompt per line")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DgqError(f"prompt file {str(path)!r} cannot be read as UTF-8 text: {exc}") from None
        where = f"prompt file {str(path)!r}"
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise DgqError(f"{where} holds no prompts: expected one prompt per line")
    return prompts


def shard_indices(count: int, shard: tuple[int, int] | None) -> list[int]:
    """Prompt indices of shard (i, n), 0 <= i < n: the i-th of n contiguous, near-equal slices."""
    if shard is None:
        return list(range(count))
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise DgqError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    if n > count:
        raise DgqError(f"cannot split {count} prompts into {n} shards")
    return list(range(i * count // n, (i + 1) * count // n))


def open_unet(model: str, model_seed: int = 0):
    """The UNet alone of `open_pipeline(model, model_seed)` (same weights), fp32, on the CPU."""
    if model == "tiny":
        from models.tiny_pipeline import build_tiny_pipeline

        return build_tiny_pipeline(model_seed).unet
    from models.loader import load_unet

    return load_unet(model)


def open_pipeline(model: str, seed: int = 0, device: str | None = None):
    """'tiny' (the embedded random pipeline built from `seed`) or a local diffusers pipeline folder."""
    import torch

    if model == "tiny":
        from models.tiny_pipeline import build_tiny_pipeline

        pipe = build_tiny_pipeline(seed)
        pipe.set_progress_bar_config(disable=True)
    else:
        from models.loader import load_pipeline

        pipe = load_pipeline(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return pipe.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise DgqError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from None


# --scheduler name -> (diffusers class, config overrides). Each keeps the pipeline's betas (from_config).
SCHEDULERS = {
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),      # the paper's sampler
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),                  # SDXL-Turbo's sampler (1-4 steps)
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpm-solver": ("DPMSolverMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
DEFAULT_SCHEDULER = "pndm"


def use_scheduler(pipe, name: str = DEFAULT_SCHEDULER) -> None:
    """Swap in the named scheduler with the pipeline's noise schedule (betas, training timesteps) kept."""
    import diffusers

    if name not in SCHEDULERS:
        raise DgqError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
    class_name, overrides = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    current = pipe.scheduler
    if isinstance(current, cls) and all(current.config.get(k) == v for k, v in overrides.items()):
        return
    pipe.scheduler = cls.from_config(current.config, **overrides)


def use_pndm(pipe) -> None:
    """Swap in PNDM with the pipeline's noise schedule (the paper's sampler), keeping its betas."""
    use_scheduler(pipe, "pndm")


def scheduler_record(pipe, name: str) -> dict:
    """What the statistics record about the sampler (PNDM keeps its historical two keys)."""
    record = {"scheduler": type(pipe.scheduler).__name__}
    if name == "pndm":
        record["skip_prk_steps"] = True
    else:
        record["scheduler_name"] = name
    return record


def sample_latents(pipe, prompt: str, index: int, *, steps: int, guidance: float, seed: int,
                   latent_size: int | None = None, negative_prompt: str = "", on_step=None):
    """One FP sample (latents, no VAE decode); the generator is CPU-seeded so every device draws the same noise.
    `on_step()` is called after each denoising step (pipelines with `callback_on_step_end`; it changes nothing)."""
    import torch

    import inspect

    kwargs = {}
    if latent_size is not None:
        kwargs["height"] = kwargs["width"] = latent_size * pipe.vae_scale_factor
    parameters = inspect.signature(pipe.__call__).parameters
    if "negative_prompt" in parameters:
        kwargs["negative_prompt"] = negative_prompt or None
    if on_step is not None and "callback_on_step_end" in parameters:
        def step_end(_pipe, _i, _t, tensors):
            on_step()
            return tensors  # the pipeline's own tensors back, untouched
        kwargs["callback_on_step_end"] = step_end
    generator = torch.Generator("cpu").manual_seed(seed + index)
    with torch.no_grad():
        return pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                    output_type="latent", **kwargs).images


def calibrate(pipe, prompts: list[str], *, model_name: str, steps: int = DEFAULT_STEPS,
              guidance: float = DEFAULT_GUIDANCE, seed: int = 0, indices: list[int] | None = None,
              latent_size: int | None = None, negative_prompt: str = "", model_seed: int | None = None,
              progress: bool = False, scheduler: str = DEFAULT_SCHEDULER):
    """Run the sampling loop over `prompts[indices]` with the observer attached -> CalibrationStats."""
    from tqdm import tqdm

    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.recipe import config_fingerprint

    if steps < 1:
        raise DgqError(f"steps must be at least 1, got {steps}")
    if guidance <= 1.0:
        raise DgqError(f"guidance must be > 1 (classifier-free guidance runs cond + uncond), got {guidance}")
    indices = list(range(len(prompts))) if indices is None else list(indices)
    if not indices:
        raise DgqError("no prompts to calibrate on")
    import torch

    use_scheduler(pipe, scheduler)
    unet = pipe.unet
    size = latent_size or int(unet.config.sample_size)
    # one bar tick per denoising step: at real size on a CPU one prompt takes minutes, a bar per prompt sat at 0
    bar = tqdm(total=len(indices) * steps, desc="calibrate", unit="step", disable=not progress)
    # inference mode: the same values as no_grad, with less bookkeeping per op (6% of a tiny-model run)
    with bar, torch.inference_mode(), StatsObserver(unet) as observer:
        for done, i in enumerate(indices, start=1):
            bar.set_postfix_str(f"prompt {done}/{len(indices)}", refresh=False)
            sample_latents(pipe, prompts[i], i, steps=steps, guidance=guidance, seed=seed,
                           latent_size=latent_size, negative_prompt=negative_prompt,
                           on_step=lambda: bar.update(1) if bar.n < done * steps else None)
            bar.update(done * steps - bar.n)  # pipelines without step callbacks: the whole prompt at once
    sampling = {**scheduler_record(pipe, scheduler), "steps": steps, "guidance": guidance,
                "seed": seed, "negative_prompt": negative_prompt, "prompt_count": len(prompts),
                "prompts_sha256": hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest(),
                "model_seed": model_seed}
    points = tuple(observer.points.values())
    return CalibrationStats(model_name=model_name, config_sha256=config_fingerprint(unet.config),
                            timesteps=tuple(observer.timesteps), resolution=(size, size), sampling=sampling,
                            prompt_indices=tuple(indices), points=points, arrays=observer.arrays())


def calibrate_selected(pipe, prompts: list[str], per_step: int, *, model_name: str, steps: int = DEFAULT_STEPS,
                       guidance: float = DEFAULT_GUIDANCE, seed: int = 0, latent_size: int | None = None,
                       model_seed: int | None = None, scheduler: str = DEFAULT_SCHEDULER,
                       selection: str = "density-diversity"):
    """Statistics of a chosen calibration set (EDA-DM): FP trajectories of every prompt make the pool, `per_step`
    latents per timestep are chosen by density and diversity (dgq_compiler/edadm/select.py), and the observer
    sees the UNet's CFG calls on those alone. -> (CalibrationStats, CalibrationSet)."""
    import numpy as np
    import torch

    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.edadm.calset import select_calibration_set
    from dgq_compiler.recipe import config_fingerprint

    if steps < 1:
        raise DgqError(f"steps must be at least 1, got {steps}")
    use_scheduler(pipe, scheduler)
    unet = pipe.unet
    calset = select_calibration_set(pipe, prompts, per_step, steps=steps, guidance=guidance, seed=seed,
                                    latent_size=latent_size, selection=selection)
    device = next(unet.parameters()).device
    with torch.inference_mode(), StatsObserver(unet) as observer:
        for _step, t, x, states in calset.calls():
            unet(torch.from_numpy(x).to(device), torch.tensor([float(t)], device=device),
                 torch.from_numpy(np.ascontiguousarray(states)).to(device), return_dict=False)
    size = latent_size or int(unet.config.sample_size)
    sampling = {**scheduler_record(pipe, scheduler), "steps": steps, "guidance": guidance, "seed": seed,
                "negative_prompt": "", "prompt_count": len(prompts),
                "prompts_sha256": hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest(),
                "model_seed": model_seed, "selection": {"rule": selection, **calset.summary()}}
    stats = CalibrationStats(model_name=model_name, config_sha256=config_fingerprint(unet.config),
                             timesteps=tuple(observer.timesteps), resolution=(size, size), sampling=sampling,
                             prompt_indices=tuple(range(len(prompts))), points=tuple(observer.points.values()),
                             arrays=observer.arrays())
    return stats, calset
