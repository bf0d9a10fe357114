"""Calibration cost vs the plain FP sampling loop on the tiny pipeline, and its memory.

Times (--repeats runs of each mode, interleaved so machine load hits all alike; best and median, wall clock
and this process's CPU time, which a busy shared machine disturbs less):
  fp-default   the pipeline as shipped (diffusers' default attention: fused SDPA): the budget's baseline
  fp-explicit  the same loop with explicit softmax attention (diffusers' AttnProcessor arithmetic, which the
               export and the observer use: the observer needs the probabilities)
  calibrate    `dgq calibrate`'s loop: the statistics observer attached (explicit attention + streaming min/max),
               in torch inference mode, and the statistics arrays at the end
Memory: the observer's running buffers after K and after 2K prompts (they must be equal: nothing grows with
samples), the bound points x T x (C + HW) they follow, its fixed per-call working buffers, and the peak RSS
of a whole FP run vs a whole calibration run (each in a fresh subprocess).

    python benchmarks/calibration_overhead.py [--prompts 4] [--steps 25] [--repeats 5] [--threads 1]
    python benchmarks/calibration_overhead.py --unet-only sd-v1.4 [--threads 2]   # one UNet call, batch 2
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def run_loop(pipe, prompts, steps, mode) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of sampling `prompts` in `mode`."""
    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention
    from dgq_compiler.calibrate.run import calibrate, sample_latents

    def loop():
        for i, prompt in enumerate(prompts):
            sample_latents(pipe, prompt, i, steps=steps, guidance=7.5, seed=0)

    start, cpu = time.perf_counter(), time.process_time()
    if mode == "fp-default":
        loop()
    elif mode == "fp-explicit":
        with tapped_attention(pipe.unet, PassThroughTap()):
            loop()
    else:  # what `dgq calibrate` runs: the loop observed (in inference mode), then the statistics' arrays
        calibrate(pipe, prompts, model_name="tiny", steps=steps, guidance=7.5, seed=0)
    return time.perf_counter() - start, time.process_time() - cpu


def child(mode, prompts_n, steps, threads):
    import torch

    from dgq_compiler.calibrate.run import open_pipeline, read_prompts

    torch.set_num_threads(threads)
    pipe = open_pipeline("tiny")
    run_loop(pipe, read_prompts()[:prompts_n], steps, mode)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def unet_only(model: str, repeats: int, threads: int):
    """One UNet call (batch 2, random weights and inputs): default FP, explicit-attention FP, observed. The
    observer's first call records the layout (the reference path): it is timed apart, the rest are later calls."""
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

    def timed():
        start = time.perf_counter()
        unet(sample, t, **kwargs)
        return time.perf_counter() - start

    times = {"fp-default": [], "fp-explicit": [], "calibrate": []}
    with torch.no_grad():
        for _ in range(repeats):
            times["fp-default"].append(timed())
            with tapped_attention(unet, PassThroughTap()):
                times["fp-explicit"].append(timed())
        with StatsObserver(unet) as observer:
            first = timed()  # records the layout
            for _ in range(repeats):
                times["calibrate"].append(timed())
            working = observer.working_bytes
    best = {k: min(v) for k, v in times.items()}
    print(f"{model} UNet call, batch 2, {size}x{size} latents, {threads} thread(s), best of {repeats}: "
          f"fp-default {best['fp-default']:.3f} s, fp-explicit {best['fp-explicit']:.3f} s, "
          f"calibrate {best['calibrate']:.3f} s (first, recording call {first:.3f} s); calibrate x default "
          f"{best['calibrate'] / best['fp-default']:.3f}, x explicit {best['calibrate'] / best['fp-explicit']:.3f}; "
          f"observer working buffers {working / 1e6:.1f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5)
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
    wall, cpu = {m: [] for m in modes}, {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            w, c = run_loop(pipe, prompts, args.steps, m)
            wall[m].append(w)
            cpu[m].append(c)
    rows = []
    for m in modes:
        best, median = min(wall[m]), statistics.median(wall[m])
        rows.append([m, f"{best:.3f}", f"{median:.3f}", f"{best / min(wall['fp-default']):.3f}",
                     f"{median / statistics.median(wall['fp-default']):.3f}",
                     f"{min(cpu[m]) / min(cpu['fp-default']):.3f}", f"{best / min(wall['fp-explicit']):.3f}"])
    print(format_table(["mode", "best s", "median s", "x default (best)", "x default (median)",
                        "x default (best CPU)", "x explicit (best)"], rows,
                       title=f"tiny pipeline: {args.prompts} prompts x {args.steps} PNDM steps, CFG 7.5, "
                             f"{args.threads} thread(s), {args.repeats} runs per mode (budget: calibrate "
                             f"<= 1.3x fp-default)"))
    spread = max(statistics.median(v) / min(v) for v in wall.values())
    if spread > 1.15:
        print(f"note: medians run up to {spread:.2f}x the best runs: the machine was busy, trust the best figures")

    # memory: running buffers after K and 2K prompts, and the points x T x (C + HW) bound
    sizes = []
    for count in (args.prompts, 2 * args.prompts):
        with StatsObserver(pipe.unet) as obs:
            for i in range(count):
                sample_latents(pipe, read_prompts()[i], i, steps=args.steps, guidance=7.5, seed=0)
            working = obs.working_bytes  # (the attention scratch is released on exit)
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
             ["per-call working buffers (fixed)", f"{working / 1e6:.3f} MB"],
             ["peak RSS, FP loop (subprocess)", f"{peaks['fp-default']:.0f} MB"],
             ["peak RSS, calibration (subprocess)",
              f"{peaks['calibrate']:.0f} MB ({peaks['calibrate'] - peaks['fp-default']:+.0f} MB)"]]
    print()
    print(format_table(["memory", "value"], rows))


if __name__ == "__main__":
    main()
