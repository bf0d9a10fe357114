"""Do the trained shapes model's activations have DGQ's structure? Measured against the random `tiny`.

    python benchmarks/activation_structure.py [--pipeline DIR] [--prompts N] [--steps 25]

For each pipeline, samples the first N shapes calibration prompts (PNDM, the shapes model's guidance,
models.trained.SHAPES_GUIDANCE) and prints:
- activation ranges at every Conv/Linear input of the UNet (DGQ's quantization points, conv_in and
  conv_out excluded): per channel max|x| over the whole run, and the ratio of the largest channel to
  the median channel (an outlier channel shows as a large ratio); the same along pixels/tokens;
- cross-attention probability mass on the <start> token (column 0), against the uniform share 1/77,
  and how often <start> is the most-attended token.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from passes.contract import FP_MODULES
from models.trained import SHAPES_GUIDANCE


def _reduce_max_abs(x: torch.Tensor, conv: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel and per-pixel (or per-token) max |x| of one call's input."""
    a = x.detach().abs()
    if conv:  # [B, C, H, W]
        return a.amax(dim=(0, 2, 3)), a.amax(dim=(0, 1)).flatten()
    a = a.reshape(a.shape[0], -1, a.shape[-1]) if a.dim() >= 3 else a.unsqueeze(1)  # [B, T, C]
    return a.amax(dim=(0, 1)), a.amax(dim=(0, 2))


class Recorder:
    """Hooks on the UNet's Conv/Linear inputs and on cross-attention probabilities."""

    def __init__(self, unet):
        self.channel_max: dict[str, torch.Tensor] = {}
        self.pixel_max: dict[str, torch.Tensor] = {}
        self.start_mass: list[float] = []
        self.start_argmax: list[float] = []
        self.start_mass_cond: list[float] = []
        self.handles = []
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())  # explicit softmax probabilities we can observe
        for name, module in unet.named_modules():
            if name in FP_MODULES:
                continue
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                self.handles.append(module.register_forward_pre_hook(self._input_hook(name, module)))
            if name.endswith("attn2"):
                self._wrap_scores(module)

    def _input_hook(self, name, module):
        conv = isinstance(module, torch.nn.Conv2d)

        def hook(_module, inputs):
            channel, pixel = _reduce_max_abs(inputs[0], conv)
            self.channel_max[name] = torch.maximum(self.channel_max.get(name, channel), channel)
            if name in self.pixel_max and self.pixel_max[name].shape == pixel.shape:
                pixel = torch.maximum(self.pixel_max[name], pixel)
            self.pixel_max[name] = pixel
        return hook

    def _wrap_scores(self, attn):
        original = attn.get_attention_scores

        def get_attention_scores(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)  # [B*heads, queries, 77]
            self.start_mass.append(probs[..., 0].mean().item())
            self.start_argmax.append((probs.argmax(-1) == 0).float().mean().item())
            half = probs.shape[0] // 2  # CFG batch: unconditional first, conditional second
            self.start_mass_cond.append(probs[half:, :, 0].mean().item())
            return probs
        attn.get_attention_scores = get_attention_scores

    def summary(self) -> dict:
        rows = []
        for name, channel in self.channel_max.items():
            pixel = self.pixel_max[name]
            rows.append((name, float(channel.max()), float(channel.max() / channel.median().clamp_min(1e-12)),
                         float(pixel.max() / pixel.median().clamp_min(1e-12))))
        return {"layers": rows, "start_mass": float(np.mean(self.start_mass)),
                "start_mass_cond": float(np.mean(self.start_mass_cond)),
                "start_argmax": float(np.mean(self.start_argmax))}


def measure(pipe, prompts: list[str], steps: int, seed: int = 0) -> dict:
    recorder = Recorder(pipe.unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pipe(prompts, num_inference_steps=steps, guidance_scale=SHAPES_GUIDANCE, generator=generator, output_type="np")
    return recorder.summary()


def report(title: str, result: dict, top: int = 6) -> None:
    rows = result["layers"]
    channel_ratios = [r[2] for r in rows]
    pixel_ratios = [r[3] for r in rows]
    print(f"\n== {title}: {len(rows)} Conv/Linear inputs ==")
    print(f"max/median channel max|x|: median over layers {statistics.median(channel_ratios):.1f}, "
          f"largest {max(channel_ratios):.1f}; layers with ratio > 10: {sum(r > 10 for r in channel_ratios)}, "
          f"> 30: {sum(r > 30 for r in channel_ratios)}")
    print(f"max/median pixel|token max|x|: median over layers {statistics.median(pixel_ratios):.1f}, "
          f"largest {max(pixel_ratios):.1f}; layers with ratio > 10: {sum(r > 10 for r in pixel_ratios)}")
    print(f"top {top} layers by channel ratio (max|x|, channel ratio, pixel ratio):")
    for name, peak, ch, px in sorted(rows, key=lambda r: -r[2])[:top]:
        print(f"  {name:62s} {peak:9.2f} {ch:8.1f} {px:8.1f}")
    print(f"cross-attention mass on <start>: {result['start_mass']:.3f} (conditional half "
          f"{result['start_mass_cond']:.3f}; uniform 1/77 = {1 / 77:.3f}); "
          f"<start> is the most-attended token for {100 * result['start_argmax']:.1f}% of queries")


def main(argv: list[str] | None = None) -> int:
    from models.loader import load_pipeline
    from models.tiny_pipeline import build_tiny_pipeline
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=None, help="trained pipeline folder (default: the shipped one)")
    parser.add_argument("--prompts", type=int, default=8, help="first N shapes calibration prompts")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = shapes_prompts_file("shapes_calibration.txt").read_text(encoding="utf-8").splitlines()[:args.prompts]
    trained = load_pipeline(args.pipeline or trained_pipeline_dir())
    tiny = build_tiny_pipeline(seed=0)
    tiny.set_progress_bar_config(disable=True)
    for title, pipe in (("trained shapes-sd", trained), ("random tiny", tiny)):
        report(title, measure(pipe, prompts, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
