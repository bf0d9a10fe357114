"""Per-layer SQNR of DGQ recipes vs the baselines on the tiny pipeline (torch fake-quant reference).

Calibrates on the first --cal-prompts built-in calibration prompts (PNDM, --steps, CFG 7.5), builds a
recipe per config, then replays the UNet calls of FP sampling on --eval-prompts held-out prompts: each call
runs in FP and quantized on identical inputs; every Conv/Linear output is compared
(SQNR = 10 log10(sum fp^2 / sum (fp - quant)^2), summed over calls). Also the UNet output and the final
latents of whole quantized sampling runs (errors compounding along the trajectory).

    python benchmarks/sqnr_tiny.py [--cal-prompts 16] [--eval-prompts 4] [--steps 25] [--all-layers]
The tiny pipeline has random weights: the figures compare quantizers on its activations, nothing more.
"""
from __future__ import annotations

import argparse
import math
import time
from importlib import resources

CONFIGS = ("dgq-w8a8-g8", "qdiffusion-w8a8", "tfmq-w8a8", "dgq-w4a6-g16", "qdiffusion-w4a6", "tfmq-w4a6")


def sqnr(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10 * math.log10(signal / noise)


def record_calls(pipe, prompts, steps, seed):
    """The UNet inputs of FP sampling (sample, timestep, text embeddings) and the final FP latents."""
    import torch

    from dgq_compiler.calibrate.run import sample_latents

    calls = []

    def hook(_m, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append((args[0].clone(), t.clone() if torch.is_tensor(t) else t, kwargs["encoder_hidden_states"].clone()))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        latents = [sample_latents(pipe, p, 1000 + i, steps=steps, guidance=7.5, seed=seed) for i, p in enumerate(prompts)]
    finally:
        handle.remove()
    return calls, latents


def layer_outputs(unet, names):
    store = {}
    handles = [m.register_forward_hook(lambda m, a, out, n=n: store.__setitem__(n, out.detach()))
               for n, m in unet.named_modules() if n in names]
    return store, handles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cal-prompts", type=int, default=16)
    ap.add_argument("--eval-prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--all-layers", action="store_true", help="print every layer (default: one row per block)")
    args = ap.parse_args()

    import torch

    from dgq_compiler.calibrate.points import quantizable_layers
    from dgq_compiler.calibrate.run import calibrate, open_pipeline, read_prompts, sample_latents
    from passes.contract import FP_MODULES
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.config import preset
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.quantize import quantize_stats

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = open_pipeline("tiny")
    stats = calibrate(pipe, read_prompts()[: args.cal_prompts], model_name="tiny", steps=args.steps, seed=args.seed)
    heldout = [p.strip() for p in resources.files("models.prompts").joinpath("heldout.txt")
               .read_text(encoding="utf-8").splitlines() if p.strip()][: args.eval_prompts]
    calls, fp_latents = record_calls(pipe, heldout, args.steps, args.seed)
    unet = pipe.unet
    names = list(quantizable_layers(unet)) + list(FP_MODULES)
    configs = args.configs.split(",")
    results = {}  # config -> {layer: (signal, noise)}
    for name in configs:
        recipe, _ = quantize_stats(stats, preset(name), unet)
        sums = {n: [0.0, 0.0] for n in names + ["UNet output"]}
        with torch.no_grad():
            for sample, t, context in calls:
                store, handles = layer_outputs(unet, set(names))
                fp_out = unet(sample, t, context).sample
                fp_layers = dict(store)
                store.clear()
                with apply_recipe(unet, recipe):
                    q_out = unet(sample, t, context).sample
                for h in handles:
                    h.remove()
                for n in names:
                    sums[n][0] += float(fp_layers[n].double().pow(2).sum())
                    sums[n][1] += float((fp_layers[n].double() - store[n].double()).pow(2).sum())
                sums["UNet output"][0] += float(fp_out.double().pow(2).sum())
                sums["UNet output"][1] += float((fp_out.double() - q_out.double()).pow(2).sum())
            with apply_recipe(unet, recipe):
                q_latents = [sample_latents(pipe, p, 1000 + i, steps=args.steps, guidance=7.5, seed=args.seed)
                             for i, p in enumerate(heldout)]
        sig = sum(float(x.double().pow(2).sum()) for x in fp_latents)
        noise = sum(float((x.double() - y.double()).pow(2).sum()) for x, y in zip(fp_latents, q_latents))
        sums["final latents"] = [sig, noise]
        results[name] = sums

    def block(layer):
        parts = layer.split(".")
        return ".".join(parts[:2]) if parts[0] in ("down_blocks", "up_blocks") else parts[0]

    layers = [n for n in names if n not in FP_MODULES] + ["conv_out"]
    rows = []
    if args.all_layers:
        for n in layers:
            rows.append([n] + [round(sqnr(*results[c][n]), 2) for c in configs])
    else:  # per block: SQNR of the summed signal and noise of its layers
        for b in dict.fromkeys(block(n) for n in layers):
            members = [n for n in layers if block(n) == b]
            rows.append([f"{b} ({len(members)} layers)"] +
                        [round(sqnr(sum(results[c][n][0] for n in members), sum(results[c][n][1] for n in members)), 2)
                         for c in configs])
    per_layer = {c: [sqnr(*results[c][n]) for n in layers] for c in configs}
    rows.append(["mean of per-layer SQNR"] + [round(sum(v) / len(v), 2) for v in per_layer.values()])
    rows.append(["min of per-layer SQNR"] + [round(min(v), 2) for v in per_layer.values()])
    rows.append(["UNet output (same inputs)"] + [round(sqnr(*results[c]["UNet output"]), 2) for c in configs])
    rows.append(["final latents (whole sampling)"] + [round(sqnr(*results[c]["final latents"]), 2) for c in configs])
    title = (f"SQNR (dB) vs FP, tiny pipeline (random weights): calibrated on {args.cal_prompts} prompts, "
             f"evaluated on {len(heldout)} held-out prompts x {len(calls) // max(1, len(heldout))} UNet calls, "
             f"{args.steps} PNDM steps, CFG 7.5  [{time.perf_counter() - start:.0f} s]")
    print(format_table(["layer"] + configs, rows, title=title))


if __name__ == "__main__":
    main()
