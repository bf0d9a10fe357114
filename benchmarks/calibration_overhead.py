"""Calibration cost vs the plain FP sampling loop on the tiny pipeline, and its memory.

Times (best of --repeats, modes interleaved so machine load hits all alike):
  fp-default   the pipeline as shipped (diffusers' default attention: fused SDPA)
  fp-explicit  the same loop with explicit softmax attention (what the export and the observer use)
  calibrate    the loop with the statistics observer attached (explicit attention + streaming min/max)
Memory: the observer's running buffers after K and after 2K prompts (they must be equal: nothing grows with
samples), the bound points x T x (C + HW) they follow, and the peak RSS of a whole FP run vs a whole
calibration run (each in a fresh subprocess).

    python benchmarks/calibration_overhead.py [--prompts 4] [--steps 25] [--repeats 3] [--threads 1]
    python benchmarks/calibration_overhead.py --unet-only sd-v1.4 [--threads 2]   # one UNet call, batch 2
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_loop(pipe, prompts, steps, mode):
    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention
    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.run import sample_latents

    def loop():
        for i, prompt in enumerate(prompts):
            sample_latents(pipe, prompt, i, steps=steps, guidance=7.5, seed=0)

    start = time.perf_counter()
    if mode == "fp-default":
        loop()
    elif mode == "fp-explicit":
        with tapped_attention(pipe.unet, PassThroughTap()):
            loop()
    else:
        with StatsObserver(pipe.unet) as observer:
            loop()
        observer.arrays()
    return time.perf_counter() - start


def child(mode, prompts_n, steps, threads):
    import torch

    from dgq_compiler.calibrate.run import open_pipeline, read_prompts

    torch.set_num_threads(threads)
    pipe = open_pipeline("tiny")
    run_loop(pipe, read_prompts()[:prompts_n], steps, mode)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def unet_only(model: str, repeats: int, threads: int):
    """One UNet call (batch 2, random weights and inputs) explicit-attention FP vs observed."""
    import torch

    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention
    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.points import dummy_inputs
    from models.zoo import unet_from_config, zoo_config

    torch.set_num_threads(threads)
    unet = unet_from_config(zoo_config(model), device="cpu", seed=0)
    size = unet.config.sample_size
    (sample, t), kwargs = dummy_inputs(unet, (size, size), batch=2)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(sample.shape, generator=gen)
    kwargs["encoder_hidden_states"] = torch.randn(kwargs["encoder_hidden_states"].shape, generator=gen)
    times = {"fp-explicit": [], "calibrate": []}
    with torch.no_grad():
        for _ in range(repeats):
            with tapped_attention(unet, PassThroughTap()):
                start = time.perf_counter()
                unet(sample, t, **kwargs)
                times["fp-explicit"].append(time.perf_counter() - start)
            with StatsObserver(unet):
                start = time.perf_counter()
                unet(sample, t, **kwargs)
                times["calibrate"].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    print(f"{model} UNet call, batch 2, {size}x{size} latents, {threads} thread(s), best of {repeats}: "
          f"fp-explicit {best['fp-explicit']:.2f} s, calibrate {best['calibrate']:.2f} s, "
          f"ratio {best['calibrate'] / best['fp-explicit']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--unet-only", default=None, help="zoo model: time one UNet call instead of the tiny loop")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.unet_only:
        return unet_only(args.unet_only, args.repeats, args.threads)
    if args.child:
        return child(args.child, args.prompts, args.steps, args.threads)

    import torch

    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, sample_latents
    from dgq_compiler.cli.table import format_table

    torch.set_num_threads(args.threads)
    pipe = open_pipeline("tiny")
    prompts = read_prompts()[: args.prompts]
    modes = ("fp-default", "fp-explicit", "calibrate")
    run_loop(pipe, prompts[:1], 3, "calibrate")  # warm-up
    times = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            times[m].append(run_loop(pipe, prompts, args.steps, m))
    best = {m: min(v) for m, v in times.items()}
    rows = [[m, best[m], best[m] / best["fp-default"], best[m] / best["fp-explicit"]] for m in modes]
    print(format_table(["mode", "best s", "x fp-default", "x fp-explicit"], rows,
                       title=f"tiny pipeline: {args.prompts} prompts x {args.steps} PNDM steps, CFG 7.5, "
                             f"{args.threads} thread(s), best of {args.repeats}"))

    # memory: running buffers after K and 2K prompts, and the points x T x (C + HW) bound
    sizes = []
    for count in (args.prompts, 2 * args.prompts):
        with StatsObserver(pipe.unet) as obs:
            for i in range(count):
                sample_latents(pipe, read_prompts()[i], i, steps=args.steps, guidance=7.5, seed=0)
        buffers = sum(t.numel() * t.element_size() for d in (obs.mins, obs.maxs) for t in d.values())
        sizes.append((count, buffers, obs))
    obs = sizes[-1][2]
    t = len(obs.timesteps)
    bound = sum(2 * t * (p.channels + p.pixels) * 4 + (2 * t * p.channels * 4 if p.cross and p.role in "kv" else 0)
                for p in obs.points.values() if p.role != "attn_probs")
    bound += sum(t * p.channels * 4 + 8 * t for p in obs.points.values() if p.role == "attn_probs")
    peaks = {}
    for mode in ("fp-default", "calibrate"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--prompts", str(args.prompts),
                              "--steps", str(args.steps), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True).stdout
        peaks[mode] = json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]
    rows = [[f"running buffers after {c} prompts", f"{b / 1e6:.3f} MB"] for c, b, _ in sizes]
    rows += [["points x T x (C + HW) bound", f"{bound / 1e6:.3f} MB ({len(obs.points)} points, T = {t})"],
             ["peak RSS, FP loop (subprocess)", f"{peaks['fp-default']:.0f} MB"],
             ["peak RSS, calibration (subprocess)", f"{peaks['calibrate']:.0f} MB"]]
    print()
    print(format_table(["memory", "value"], rows))


if __name__ == "__main__":
    main()
