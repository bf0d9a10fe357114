"""EDA-DM on the embedded trained model: block reconstruction (learned rounding) against round-to-nearest weights.

One run: a density/diversity calibration set (pool of P calibration prompts, K latents per timestep) gives the
statistics and the reconstruction data; per configuration (W4A8, W4A6 by default) the round-to-nearest recipe and
its reconstruction are compiled, verified against the integer simulator (generic-npu) and run in a default
onnxruntime session for
  - noise-prediction SNR against FP on FP trajectories of held-out prompts (mean over calls, dB),
  - images of the held-out prompts (same seeds for every configuration) scored by the shapes evaluator:
    alignment with a 95 % bootstrap interval, and the paired difference reconstructed - nearest.
Prints a table and writes JSON (--json). Heavy on CPU: run it niced.

    nice -n 10 python benchmarks/edadm_reconstruct.py --json /tmp/edadm.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from models.trained import SHAPES_GUIDANCE


def bootstrap(values: np.ndarray, seed: int = 0, draws: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def per_image_alignment(evaluator, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    return np.array([evaluator.alignment(images[i:i + 1], prompts[i:i + 1]).score for i in range(len(prompts))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="dgq-w4a8-g8,dgq-w4a6-g16")
    ap.add_argument("--pool", type=int, default=32, help="calibration prompts in the pool")
    ap.add_argument("--per-step", type=int, default=4, help="latents chosen per timestep")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--guidance-weights", default="0",
                    help="comma-separated weights of the guidance-direction loss term; one reconstruction each")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--scheduler", default="pndm")
    ap.add_argument("--snr-prompts", type=int, default=8)
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, help="folder to keep the recipes in (nearest and reconstructed)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from dgq_compiler.calibrate.run import calibrate_selected, open_pipeline, read_prompts, use_scheduler
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.edadm.reconstruct import ReconstructOptions, reconstruct_recipe
    from dgq_compiler.export import export_unet
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.report.analysis import snr_db
    from dgq_compiler.run import default_prompt_files, resolve_model
    from dgq_compiler.sampling import decode, onnx_predictor, sample, torch_predictor
    from dgq_compiler.verify import verify_graph
    from models.evaluator import load_evaluator

    source, label = resolve_model("embedded")
    calibration_file, heldout_file = default_prompt_files(source)
    pipe = open_pipeline(source, device="cpu")
    use_scheduler(pipe, args.scheduler)
    results: dict = {"settings": vars(args), "configs": {}}
    timer = time.perf_counter()
    stats, calset = calibrate_selected(pipe, read_prompts(calibration_file)[: args.pool], args.per_step,
                                       model_name="embedded", steps=args.steps, scheduler=args.scheduler)
    results["calibration_set"] = calset.summary()
    results["seconds"] = {"calibrate_select": round(time.perf_counter() - timer, 1)}
    print("calibration set:", calset.summary(), flush=True)

    heldout = read_prompts(heldout_file)
    evaluator = load_evaluator()
    image_prompts = [p for p in heldout for _ in range(args.images_per_prompt)]
    seeds = [1000 + i for i in range(len(image_prompts))]
    calls = []
    sample(pipe, torch_predictor(pipe.unet), heldout[: args.snr_prompts], list(range(args.snr_prompts)), args.steps,
           SHAPES_GUIDANCE, on_step=lambda i, t, x, s, e: calls.append((t, x, s, e)))
    fp_images = decode(pipe, sample(pipe, torch_predictor(pipe.unet), image_prompts, seeds, args.steps, SHAPES_GUIDANCE))
    fp_align = per_image_alignment(evaluator, fp_images / 255.0, image_prompts)
    results["fp"] = {"alignment": float(fp_align.mean()), "interval": bootstrap(fp_align)}

    with tempfile.TemporaryDirectory(prefix="edadm-bench-") as tmp:
        tmp = Path(tmp)
        export_unet(pipe.unet, tmp / "export", model_name=label, progress=lambda _m: None)
        for name in args.presets.split(","):
            recipe, _ = quantize_stats(stats, preset(name), pipe.unet)
            variants = {"nearest": (recipe, None, None)}
            for weight in [float(w) for w in args.guidance_weights.split(",")]:
                start = time.perf_counter()
                rec, report = reconstruct_recipe(recipe, pipe.unet, calset, ReconstructOptions(
                    iterations=args.iterations, guidance_weight=weight))
                key = "reconstructed" + (f"-guidance{weight:g}" if weight else "")
                totals = report.totals()
                variants[key] = (rec, totals, round(time.perf_counter() - start, 1))
                print(f"{name}: {key} in {variants[key][2]:.0f} s, block loss {totals['loss_nearest']:.4f} -> "
                      f"{totals['loss_after']:.4f} ({totals['learned']}/{totals['blocks']} blocks learned)", flush=True)
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                for key, (r, _totals, _seconds) in variants.items():
                    r.save(Path(args.keep) / f"{name}-{key}.json", overwrite=True)
            aligns = {}
            for variant, (r, totals, rec_seconds) in variants.items():
                out = tmp / f"{name}-{variant}"
                compiled = compile_graph(tmp / "export", r, out, CompileOptions(), progress=lambda *_: None)
                verify = verify_graph(out / "unet.onnx", target="generic-npu", latent_size=16,
                                      timesteps=[float(stats.timesteps[i]) for i in (0, stats.T // 2, stats.T - 1)])
                predictor = onnx_predictor(out / "unet.onnx")  # a default session
                snr = [snr_db(e, predictor(x, t, s)) for t, x, s, e in calls]
                images = decode(pipe, sample(pipe, predictor, image_prompts, seeds, args.steps, SHAPES_GUIDANCE))
                aligns[variant] = per_image_alignment(evaluator, images / 255.0, image_prompts)
                row = {"snr_mean_db": float(np.mean(snr)), "snr_min_db": float(np.min(snr)),
                       "alignment": float(aligns[variant].mean()), "interval": bootstrap(aligns[variant]),
                       "point_check_worst": list(compiled.worst_mismatch),
                       "verify_passed": verify.passed, "overflows": sum(o.overflows for o in verify.overflows),
                       "worst_code_mismatch": max((t.mismatch_rate for t in verify.tensors), default=0.0)}
                if totals is not None:
                    diff = aligns[variant] - aligns["nearest"]
                    row.update(block_loss=totals, reconstruct_seconds=rec_seconds,
                               alignment_gain={"mean": float(diff.mean()), "interval": bootstrap(diff)})
                results["configs"][f"{name}/{variant}"] = row
                print(f"  {variant:26s} SNR {row['snr_mean_db']:.2f} dB (min {row['snr_min_db']:.2f})  alignment "
                      f"{row['alignment']:.3f} [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]  verify "
                      f"{'PASS' if verify.passed else 'FAIL'} overflows {row['overflows']}", flush=True)
    results["seconds"]["total"] = round(time.perf_counter() - timer, 1)
    print(f"FP alignment {results['fp']['alignment']:.3f} {results['fp']['interval']}")
    for key, row in results["configs"].items():
        gain = row.get("alignment_gain")
        print(f"{key:44s} SNR {row['snr_mean_db']:6.2f} dB  alignment {row['alignment']:.3f}"
              + (f"  gain {gain['mean']:+.3f} [{gain['interval'][0]:+.3f}, {gain['interval'][1]:+.3f}]" if gain else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
