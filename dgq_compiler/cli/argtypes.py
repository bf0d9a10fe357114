"""Argument types shared by the subcommands: every number a flag takes is range-checked by argparse itself,
so a bad value is one usage line and exit code 2 before any work (no NaN, no negative tolerance, no
100000-pixel latents that die in an allocation minutes later).
"""
from __future__ import annotations

import argparse
import math

MAX_BATCH = 256          # UNet batch: 128 prompts with CFG
MAX_LATENT = 256         # latent height/width: 2048 px images, 2x the largest the zoo models are made for
MAX_STEPS = 1000         # denoising steps: the diffusion schedules have 1000 training timesteps
MAX_TIMESTEP = 1000.0
MAX_SEED = 2 ** 32 - 1   # numpy and torch generators both take it
MAX_GUIDANCE = 100.0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_range(low: int, high: int):
    """An integer in low..high (inclusive)."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def image_counts(low: int, high: int):
    """Images per prompt set: N (every set) or N,M,... (one per set, in the stage's order), each in low..high."""
    one = int_range(low, high)

    def parse(text: str) -> int | tuple[int, ...]:
        counts = tuple(one(part.strip()) for part in text.split(","))
        return counts[0] if len(counts) == 1 else counts
    parse.__name__ = "image count"
    return parse


def float_range(low: float, high: float, low_inclusive: bool = True):
    """A finite number in [low, high] ((low, high] when not `low_inclusive`)."""
    def parse(text: str) -> float:
        value = _float(text)
        if value < low or (value == low and not low_inclusive) or value > high:
            bracket = "[" if low_inclusive else "("
            raise argparse.ArgumentTypeError(f"expected a finite number in {bracket}{low:g}, {high:g}], got {text}")
        return value
    parse.__name__ = "number"
    return parse


def latent_size(text: str) -> int:
    """A latent height/width: a multiple of 8 (the UNets downsample three times) in 8..MAX_LATENT."""
    value = _int(text)
    if value < 8 or value > MAX_LATENT or value % 8:
        raise argparse.ArgumentTypeError(f"expected a multiple of 8 in 8..{MAX_LATENT}, got {value}")
    return value


def timesteps(text: str) -> list[float]:
    """Comma-separated diffusion timesteps, each finite in 0..MAX_TIMESTEP."""
    values = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not math.isfinite(value) or not 0 <= value <= MAX_TIMESTEP:
            raise argparse.ArgumentTypeError(f"timesteps must be finite numbers in 0..{MAX_TIMESTEP:g}, got {item.strip()}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one timestep, got {text!r}")
    return values


def check_attention_memory(unet_config, latent: int, batch: int) -> None:
    """Refuse a latent size / batch whose largest attention-probability tensor (batch x heads x N^2 float32,
    N = latent pixels at that block) alone would take more than half of this machine's memory: such a run
    dies in an allocation (or swaps the machine) minutes later."""
    import os

    from dgq_compiler.errors import DgqError

    heads = unet_config.get("num_attention_heads") or unet_config.get("attention_head_dim") or 8
    need, block = 0, None
    for i, kind in enumerate(unet_config.get("down_block_types") or ()):
        if "Attn" in kind:
            side = -(-latent // 2 ** i)
            h = heads[i] if isinstance(heads, (list, tuple)) else heads
            if batch * h * side ** 4 * 4 > need:
                need, block = batch * h * side ** 4 * 4, i
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > memory // 2:
        raise DgqError(f"--latent-size {latent} with batch {batch}: the attention probabilities of down block "
                       f"{block} alone need {need / 1e9:.1f} GB, more than half of this machine's "
                       f"{memory / 1e9:.0f} GB; expected a smaller --latent-size or --batch")


batch = int_range(1, MAX_BATCH)
steps = int_range(1, MAX_STEPS)
seed = int_range(0, MAX_SEED)
count = int_range(1, 1_000_000)
tolerance = float_range(0.0, 1.0)
GUIDANCE_HELP = "classifier-free guidance scale (default: the model's; 3 for the embedded model, 7.5 otherwise)"
cfg_guidance = float_range(1.0, MAX_GUIDANCE, low_inclusive=False)  # calibration needs the cond + uncond batch
guidance = float_range(0.0, MAX_GUIDANCE)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None and False: there the help text says what happens instead
    ("None: the model's", a store_true switch), and "(default: None)" would only repeat it less clearly."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)
