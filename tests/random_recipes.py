"""A valid recipe with random but plausible parameters, for tests and benchmarks that need a recipe without
calibrating (not production code: recipes come from `dgq quantize`)."""
from __future__ import annotations

import numpy as np

from dgq_compiler.config import QuantConfig
from dgq_compiler.recipe import Recipe, TensorQuant, config_fingerprint


def random_recipe(unet, config: QuantConfig, timesteps, seed: int = 0, resolution=None,
                  model_name: str = "random") -> Recipe:
    """A valid recipe with random but plausible parameters for every quantization point of `unet`
    (a UNet2DConditionModel, also on the meta device, or a UNet config dict)."""
    from dgq_compiler.calibrate.points import probe_points
    from models.zoo import unet_from_config

    if isinstance(unet, dict):
        unet = unet_from_config(unet, device="meta")
    timesteps = tuple(int(t) for t in timesteps)
    size = int(unet.config.sample_size) if resolution is None else resolution
    resolution = (size, size) if isinstance(size, int) else tuple(size)
    rng = np.random.default_rng(seed)
    t, g = len(timesteps), config.groups
    tensors = {}
    points = probe_points(unet, resolution, exclude_bos=config.exclude_bos)
    for point in points:
        key = (point.module, point.role)
        if point.role == "attn_probs":
            if config.attn_quantizer == "log2":
                scale = rng.uniform(0.05, 1.0, (t, 1))
                tensors[key] = TensorQuant(point.module, "attn_probs", "log2", config.attention_bits, "tensor",
                                           scale, np.zeros((t, 1)), None, dynamic=config.log_dynamic,
                                           exclude_bos=config.exclude_bos and point.cross)
            else:
                hi = rng.uniform(0.05, 1.0, (t, 1))
                tensors[key] = TensorQuant(point.module, "attn_probs", "uniform", config.attention_bits, "tensor",
                                           hi / (2 ** config.attention_bits - 1), np.zeros((t, 1)), None,
                                           exclude_bos=config.exclude_bos and point.cross)
            continue
        bits = config.act_bits
        axis = "tensor" if g == 1 else ("pixel" if point.pixels and rng.random() < 0.5 else "channel")
        n = point.channels if axis == "channel" else point.pixels
        groups = 1 if axis == "tensor" else min(g, n)
        lo = -rng.uniform(0.1, 4.0, (t, groups)) * (rng.random((t, groups)) < 0.8)  # some groups non-negative
        hi = rng.uniform(0.1, 8.0, (t, groups))
        scale = (hi - lo) / (2 ** bits - 1)
        zero = np.clip(np.rint(-lo / scale), 0, 2 ** bits - 1)
        group_map = None
        if axis != "tensor":
            rows = 1 if config.shared_group_map else t
            group_map = np.stack([rng.permutation(np.arange(n) % groups) for _ in range(rows)])
        tensors[key] = TensorQuant(point.module, point.role, "uniform", bits, axis, scale, zero, group_map,
                                   exclude_bos=config.exclude_bos and point.cross and point.role in ("k", "v"))
    modules = dict(unet.named_modules())
    for point in points:
        if point.role != "input":
            continue
        c_out = modules[point.module].weight.shape[0]
        half = 2 ** (config.weight_bits - 1)
        scale = rng.uniform(1e-4, 2e-2, c_out) * (8 / config.weight_bits) ** 2
        zero = rng.integers(-half // 4, half // 4 + 1, c_out)
        tensors[(point.module, "weight")] = TensorQuant(point.module, "weight", "uniform", config.weight_bits,
                                                        "out_channel", scale, zero)
    return Recipe(model_name=model_name, config_sha256=config_fingerprint(unet.config), config=config,
                  timesteps=timesteps, resolution=resolution, tensors=tensors)
