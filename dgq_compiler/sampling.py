"""A plain text-to-image sampling loop (PNDM + classifier-free guidance) around any noise predictor.

The same loop drives the torch UNet (FP reference) and an onnxruntime session of a compiled graph, so
images from both differ only by the UNet arithmetic.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

NoisePredictor = Callable[[np.ndarray, float, np.ndarray], np.ndarray]  # (sample, t, text states) -> eps


def guidance_direction(eps):
    """eps_cond - eps_uncond of one CFG call's output (numpy or torch): `sample` batches it [uncond; cond]. The part
    of the prediction that classifier-free guidance multiplies by its scale, and that the prompt lives in."""
    half = len(eps) // 2
    return eps[half:] - eps[:half]


def torch_predictor(unet) -> NoisePredictor:
    import torch

    def predict(sample: np.ndarray, t: float, states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = unet(torch.from_numpy(sample), torch.tensor([t], dtype=torch.float32),
                       torch.from_numpy(states), return_dict=False)[0]
        return out.numpy()

    return predict


def onnx_predictor(graph_path, threads: int | None = None) -> NoisePredictor:
    """A default onnxruntime session of a graph, fp32 or compiled (as a client would open it)."""
    from dgq_compiler import runtime

    session = runtime.session(graph_path, "default", threads=threads)

    def predict(sample: np.ndarray, t: float, states: np.ndarray) -> np.ndarray:
        feeds = {"sample": sample.astype(np.float32), "timestep": np.array([t], dtype=np.float32),
                 "encoder_hidden_states": states.astype(np.float32)}
        return session.run(["out_sample"], feeds)[0]

    return predict


def encode_prompts(pipe, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(conditional, unconditional) text states, each [N, 77, D]."""
    import torch

    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=[""] * len(prompts))
    return cond.float().numpy(), uncond.float().numpy()


def initial_latents(pipe, seeds: list[int], latent_size: int | None = None) -> np.ndarray:
    """One Gaussian latent per seed, independent of batch composition (each seed its own generator)."""
    import torch

    size = latent_size or int(pipe.unet.config.sample_size)
    channels = int(pipe.unet.config.in_channels)
    return np.stack([torch.randn(channels, size, size, generator=torch.Generator().manual_seed(s)).numpy()
                     for s in seeds]).astype(np.float32)


def sample(pipe, predictor: NoisePredictor, prompts: list[str], seeds: list[int], steps: int = 25,
           guidance: float = 7.5, on_step: Callable | None = None, latent_size: int | None = None) -> np.ndarray:
    """Latents after `steps` PNDM steps with CFG; `on_step(i, t, eps_cond_uncond_input)` sees every UNet call."""
    import copy

    import torch

    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps)
    cond, uncond = encode_prompts(pipe, prompts)
    states = np.concatenate([uncond, cond])
    latents = torch.from_numpy(initial_latents(pipe, seeds, latent_size)) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.scale_model_input(torch.cat([latents, latents]), t).numpy()
        eps = predictor(x, float(t), states)
        if on_step is not None:
            on_step(i, float(t), x, states, eps)
        eps_uncond, eps_cond = np.split(eps, 2)
        guided = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(torch.from_numpy(guided), t, latents).prev_sample
    return latents.numpy()


def decode(pipe, latents: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, 3] from latents."""
    import torch

    with torch.no_grad():
        images = pipe.vae.decode(torch.from_numpy(latents) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy()
