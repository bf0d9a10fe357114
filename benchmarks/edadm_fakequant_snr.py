"""Noise-prediction SNR of recipes through the torch fake-quant reference (what `dgq compile`'s point check holds
the graph to), on the FP PNDM trajectories of the first held-out prompts of the embedded model: a quick check of
recipes kept by `benchmarks/edadm_reconstruct.py --keep DIR` (or any `dgq quantize` / `dgq reconstruct` output).

    nice -n 10 python benchmarks/edadm_fakequant_snr.py DIR/dgq-w4a8-g8-nearest.json DIR/dgq-w4a8-g8-reconstructed.json
"""
from __future__ import annotations

import argparse

import numpy as np

from models.trained import SHAPES_GUIDANCE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, use_scheduler
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.recipe import Recipe
    from dgq_compiler.report.analysis import snr_db
    from dgq_compiler.run import default_prompt_files, resolve_model
    from dgq_compiler.sampling import sample, torch_predictor

    source, label = resolve_model("embedded")
    pipe = open_pipeline(source, device="cpu")
    use_scheduler(pipe, "pndm")
    held = read_prompts(default_prompt_files(source)[1])[: args.prompts]
    calls = []
    sample(pipe, torch_predictor(pipe.unet), held, list(range(len(held))), args.steps, SHAPES_GUIDANCE,
           on_step=lambda i, t, x, s, e: calls.append((t, x, s, e)))
    predict = torch_predictor(pipe.unet)
    for path in args.recipes:
        recipe = Recipe.load(path, unet_config=pipe.unet.config)
        with apply_recipe(pipe.unet, recipe):
            snr = [snr_db(e, predict(x, t, s)) for t, x, s, e in calls]
        print(f"{path}: noise SNR mean {np.mean(snr):.3f} dB, min {np.min(snr):.3f} dB over {len(snr)} calls", flush=True)


if __name__ == "__main__":
    main()
