"""Peak memory of EDA-DM block reconstruction on the embedded trained model (and the recipe's hash, so two code
versions can be compared for identical results).

    python benchmarks/edadm_memory.py --stats STATS.json --out DIR [--pool 8] [--per-step 2] [--iterations 20]

Builds the density/diversity calibration set (pool of --pool calibration prompts, --per-step latents per timestep),
quantizes --preset from the statistics, reconstructs every block, saves the recipe to DIR and prints: the process's
peak RSS (VmHWM) before reconstruction (model + calibration set) and after it, the reconstruction time, and the
sha256 of the recipe's arrays. Run it with the library of each code version first on PYTHONPATH (the script only
uses the public API); one torch thread, so results are comparable bit for bit.

    python benchmarks/edadm_memory.py --estimate sd-v1.4 [--per-step 4] [--calls 25] [--resolution 512]

estimates the FP data reconstruction holds for a zoo architecture without weights (a meta-device forward with the
capture's hooks, one CFG call of --per-step samples): every block's inputs, output and layer outputs on the set
(held at once before streaming) against the largest single block's (streamed).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: shared benchmark helpers
from benchmarks.rss import peak_rss  # noqa: E402
from models.trained import SHAPES_GUIDANCE  # noqa: E402


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM), MB."""
    return peak_rss() / 2 ** 20


def _nbytes(value) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


def estimate(model: str, per_step: int, calls: int, resolution: int | None) -> dict:
    """Bytes of captured FP data per block for one call (meta forward), scaled to the calibration set."""
    from types import SimpleNamespace

    import torch

    from dgq_compiler.calibrate.points import quantizable_layers
    from dgq_compiler.edadm.reconstruct import find_blocks
    from models.zoo import resolve_config
    from simulator.cost.macs_from_config import _example_inputs, build_meta_unet, default_latent, \
        latent_from_resolution, num_downsamples

    config = resolve_config(model)
    unet = build_meta_unet(config)
    blocks = find_blocks(unet, SimpleNamespace(tensors={(m, "weight"): None for m in quantizable_layers(unet)}))
    latent = latent_from_resolution(resolution, num_downsamples(config)) if resolution else default_latent(config)
    modules = dict(unet.named_modules())
    sizes = {name: 0 for name, _ in blocks}
    handles = []
    for name, layers in blocks:
        def pre(_m, args, kwargs, name=name):
            sizes[name] += _nbytes(args) + _nbytes(kwargs)

        def post(_m, _a, _k, output, name=name):
            sizes[name] += _nbytes(output if isinstance(output, torch.Tensor) else output[0])
        handles += [modules[name].register_forward_pre_hook(pre, with_kwargs=True),
                    modules[name].register_forward_hook(post, with_kwargs=True)]
        for layer in layers:
            if layer != name:
                handles.append(modules[layer].register_forward_hook(
                    lambda _m, _a, out, name=name: sizes.__setitem__(name, sizes[name] + _nbytes(out))))
    with torch.no_grad():
        unet(**_example_inputs(unet.config, 2 * per_step, latent), return_dict=False)
    for h in handles:
        h.remove()
    largest = max(sizes, key=sizes.get)
    return {"model": model, "latent": list(latent), "blocks": len(blocks), "calls": calls, "per_step": per_step,
            "all_blocks_gb": round(sum(sizes.values()) * calls / 1e9, 2),
            "largest_block_gb": round(sizes[largest] * calls / 1e9, 2), "largest_block": largest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stats", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--estimate", default=None, metavar="MODEL", help="zoo architecture to estimate (no weights)")
    ap.add_argument("--calls", type=int, default=25, help="--estimate: calibration calls (distinct timesteps)")
    ap.add_argument("--resolution", type=int, default=None, help="--estimate: image size in pixels")
    ap.add_argument("--preset", default="dgq-w4a8-g8")
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--per-step", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    if args.estimate:
        for key, value in estimate(args.estimate, args.per_step, args.calls, args.resolution).items():
            print(f"{key:<20} {value}")
        return
    if not (args.stats and args.out):
        ap.error("--stats and --out are required (or --estimate MODEL)")

    import torch

    torch.set_num_threads(1)
    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, use_pndm
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.config import preset
    from dgq_compiler.edadm import ReconstructOptions, reconstruct_recipe
    from dgq_compiler.edadm.calset import select_calibration_set
    from dgq_compiler.quantize import quantize_stats
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    stats = CalibrationStats.load(args.stats)
    pipe = open_pipeline(str(trained_pipeline_dir()), device="cpu")
    use_pndm(pipe)
    prompts = read_prompts(shapes_prompts_file("shapes_calibration.txt"))[:args.pool]
    calset = select_calibration_set(pipe, prompts, args.per_step, steps=args.steps, guidance=SHAPES_GUIDANCE, seed=0)
    recipe, _ = quantize_stats(stats, preset(args.preset), pipe.unet)
    before = peak_rss_mb()
    start = time.perf_counter()
    result, report = reconstruct_recipe(recipe, pipe.unet.float().eval(), calset,
                                        ReconstructOptions(iterations=args.iterations, seed=0))
    seconds = time.perf_counter() - start
    after = peak_rss_mb()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = result.save(out / "recipe.json", overwrite=True)
    arrays = json.loads(Path(manifest).read_text())["arrays"]
    digest = hashlib.sha256((out / arrays).read_bytes()).hexdigest()
    summary = {"peak_rss_mb_before_reconstruction": round(before, 1), "peak_rss_mb_after": round(after, 1),
               "reconstruction_growth_mb": round(after - before, 1), "seconds": round(seconds, 1),
               "blocks": len(report.blocks), "calls": len(calset.timesteps), "per_step": args.per_step,
               "arrays_sha256": digest, **report.totals()}
    (out / "memory.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    for key, value in summary.items():
        print(f"{key:<36} {value}")


if __name__ == "__main__":
    main()
