"""How good is a shapes pipeline in floating point? The figures the testbed model is judged by.

    python benchmarks/shapes_quality.py [--pipeline DIR] [--images 64] [--sets heldout,rephrased,validation]
                                        [--guidance 3] [--steps 25] [--ceiling] [--position-check]
                                        [--conditioning-check]

Per prompt set (held-out and rephrased: the quality stage's two sets; validation: the training combinations of
`shapes_calibration.txt`, for choosing sampling settings without looking at the held-out set), the torch pipeline
samples `--images` images (prompts cycled, image i from seed set_index * 100000 + i, as the quality stage does)
and the shipped evaluator scores them: alignment with its bootstrap 95% interval, per attribute, Fréchet distance
and IS-like with jackknife intervals (`dgq_compiler.quality.metrics.score_set`, the report's own scoring).
`--ceiling`: the same scores for the VAE's reconstructions of real scenes of the same prompts (what the
autoencoder alone allows). `--position-check`: one prompt, five position phrases x five seeds; a model that places
objects by the words recognises each row's five positions, one that reads them from the initial noise repeats
one position per seed. `--conditioning-check`: how much the position and colour words change the text encoder's states
and the UNet's first-step prediction, against how much the seed noise does.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dgq_compiler.quality.intervals import resample_indices
from dgq_compiler.quality.metrics import score_set
from dgq_compiler.sampling import initial_latents
from models.evaluator import load_evaluator, reference_batch
from models.loader import load_pipeline
from models.prompt_sets import load_prompt_set, parse_prompt
from models.trained import SHAPES_GUIDANCE, shapes_prompts_file, trained_pipeline_dir

SETS = ("heldout", "rephrased", "validation")
SEED_STRIDE = 100_000
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                    "center": "in the center"}


def set_prompts(name: str) -> list[str]:
    if name == "validation":
        text = shapes_prompts_file("shapes_calibration.txt").read_text(encoding="utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(load_prompt_set(name).prompts)


def sample(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, batch: int = 32) -> np.ndarray:
    """[N, 32, 32, 3] in [0, 1], rounded to 8 bits as a user keeps them (as the quality stage scores them)."""
    chunks = []
    for start in range(0, len(prompts), batch):
        latents = torch.from_numpy(initial_latents(pipe, seeds[start:start + batch]))
        out = pipe(prompts[start:start + batch], latents=latents, num_inference_steps=steps, guidance_scale=guidance,
                   output_type="np")
        chunks.append(np.asarray(out.images, np.float32))
    return (np.clip(np.concatenate(chunks), 0, 1) * 255).round().astype(np.float32) / 255.0


def reconstructions(pipe, prompts: list[str]) -> np.ndarray:
    """The VAE's reconstructions (posterior mean) of one real scene per prompt, [N, 3, 32, 32] in [-1, 1]."""
    real = torch.from_numpy(reference_batch(prompts, 1, 2, parse_prompt).images)
    with torch.no_grad():
        return pipe.vae.decode(pipe.vae.encode(real).latent_dist.mean).sample.clamp(-1, 1).numpy()


def line(label: str, score) -> str:
    def interval(i):
        return f"{i.value:.3f} [{i.low:.3f}, {i.high:.3f}]"
    attributes = "  ".join(f"{k} {v.value:.2f}" for k, v in sorted(score.per_attribute.items()))
    return (f"{label:22s} alignment {interval(score.alignment)}  Fréchet {interval(score.frechet)}  "
            f"IS-like {score.is_like.value:.2f}  | {attributes}")


def position_check(pipe, evaluator, steps: int, guidance: float) -> int:
    seeds = [11, 12, 13, 14, 15]
    prompts = [f"one large red square {phrase} on a white background"
               for _ in seeds for phrase in POSITION_PHRASES.values()]
    images = sample(pipe, prompts, [s for s in seeds for _ in POSITION_PHRASES], steps, guidance)
    predicted = [p["position"] for p in evaluator.predict(images)]
    print(f"position check (rows: seeds {seeds}; columns: asked {', '.join(POSITION_PHRASES)}):")
    for k, seed in enumerate(seeds):
        print(f"  seed {seed}: {', '.join(predicted[5 * k:5 * k + 5])}")
    hits = sum(p == asked for p, asked in zip(predicted, list(POSITION_PHRASES) * len(seeds)))
    print(f"  recognised as asked: {hits}/{len(predicted)}")
    return hits


def conditioning_check(pipe, t: int = 961) -> None:
    """Does a word reach the UNet's first sampling step? For the five position phrases and for the six colour words
    (one prompt, the rest fixed): the spread of the text encoder's states across the words (relative to their norm),
    and the spread across the words of the clean latent the UNet predicts from one noise at timestep `t`, against its
    spread across four noises for one prompt. A word the first step ignores cannot decide what the seed noise does not."""
    alphas = pipe.scheduler.alphas_cumprod[t]
    noise = torch.randn(4, 4, *(2 * [int(pipe.unet.config.sample_size)]), generator=torch.Generator().manual_seed(0))
    print(f"conditioning check ({pipe.scheduler.config.prediction_type}, timestep {t}):")
    words = {"position": (list(POSITION_PHRASES.values()), "one large red square {} on a white background"),
             "colour": (["red", "green", "blue", "yellow", "purple", "orange"],
                        "one large {} square on the left on a white background")}
    for name, (options, template) in words.items():
        ids = pipe.tokenizer([template.format(w) for w in options], padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            states = pipe.text_encoder(ids)[0]
            out = torch.stack([pipe.unet(noise, torch.tensor([t]), s.expand(len(noise), -1, -1)).sample
                               for s in states.unsqueeze(1)])                    # [words, noises, C, H, W]
        if pipe.scheduler.config.prediction_type == "v_prediction":
            clean = alphas.sqrt() * noise - (1 - alphas).sqrt() * out
        else:
            clean = (noise - (1 - alphas).sqrt() * out) / alphas.sqrt()
        text_spread = float((states - states.mean(0)).norm() / states.norm())
        across_words = float((clean - clean.mean(0)).pow(2).mean().sqrt() / clean.std())
        across_noise = float((clean - clean.mean(1, keepdim=True)).pow(2).mean().sqrt() / clean.std())
        print(f"  {name:8s} text states spread {text_spread:.3f}; predicted clean latent spread across the words "
              f"{across_words:.3f}, across noises {across_noise:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=None, help="diffusers folder (default: the shipped shapes model)")
    parser.add_argument("--images", type=int, default=64, help="images per prompt set")
    parser.add_argument("--sets", default="heldout,rephrased",
                        help=f"comma-separated, of {', '.join(SETS)} ('' for none: only the checks)")
    parser.add_argument("--guidance", default=str(SHAPES_GUIDANCE),
                        help="classifier-free guidance scale(s), comma-separated")
    parser.add_argument("--steps", type=int, default=25, help="PNDM steps")
    parser.add_argument("--ceiling", action="store_true", help="also score the VAE's reconstructions of real scenes")
    parser.add_argument("--position-check", action="store_true", help="does the position follow the words?")
    parser.add_argument("--conditioning-check", action="store_true",
                        help="do position and colour words change the text states and the UNet's first step?")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.pipeline or trained_pipeline_dir())
    pipe.set_progress_bar_config(disable=True)
    evaluator = load_evaluator()
    guidances = [float(g) for g in args.guidance.split(",")]
    print(f"{args.pipeline or trained_pipeline_dir()}: {args.images} images per set, {args.steps} PNDM steps")
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    for index, name in enumerate(args.sets.split(",") if args.sets else []):  # --sets "": only the checks
        if name not in SETS:
            parser.error(f"unknown prompt set {name!r}: expected some of {', '.join(SETS)}")
        prompts_all = set_prompts(name)
        prompts = [prompts_all[i % len(prompts_all)] for i in range(args.images)]
        seeds = [SEED_STRIDE * index + i for i in range(args.images)]
        reference = evaluator.reference_features(list(dict.fromkeys(prompts)), 16, 1, parse_prompt)
        indices = resample_indices(args.images)
        for guidance in guidances:
            start = time.perf_counter()
            images = sample(pipe, prompts, seeds, args.steps, guidance)
            score = score_set(evaluator, images, prompts, parse_prompt, reference, indices)
            print(line(f"{name} g={guidance:g}", score) + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
        if args.ceiling:
            score = score_set(evaluator, reconstructions(pipe, prompts), prompts, parse_prompt, reference, indices)
            print(line(f"{name} VAE ceiling", score), flush=True)
    if args.position_check:
        position_check(pipe, evaluator, args.steps, guidances[0])
    if args.conditioning_check:
        conditioning_check(pipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
