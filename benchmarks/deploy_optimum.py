"""optimum's ORTStableDiffusionPipeline on `dgq package` folders of the embedded model, in optimum's own env.

optimum-onnx pins transformers 4.x, which clashes with this project's transformers 5, so the check runs in a
virtual environment of its own under /tmp (created once, `--venv` to reuse or relocate it): `python -m venv
--system-site-packages` (torch and onnxruntime come from this environment, nothing large is downloaded), then
`pip install optimum-onnx diffusers==0.35.2` inside it (diffusers 0.36+ needs huggingface_hub 1.x, which
transformers 4.x refuses). In this environment the script calibrates the embedded model (a few prompts),
quantizes and compiles DGQ W8A8 G8, and packages it and the fp32 UNet; in the venv, ORTStableDiffusionPipeline
.from_pretrained loads each folder with default onnxruntime sessions and draws the held-out prompts.
Printed: success, load time, seconds per image and per UNet call, and how far optimum's images are from
the same pipeline run here through diffusers with an onnxruntime UNet (same latents).

    python benchmarks/deploy_optimum.py [--work /tmp/dgq-deploy-optimum] [--prompts 4] [--steps 25]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PACKAGES = ["optimum-onnx", "diffusers==0.35.2"]

CHILD = r'''
import json, sys, time
import numpy as np, torch
from optimum.onnxruntime import ORTStableDiffusionPipeline
import optimum.onnxruntime, transformers, diffusers, onnxruntime
folder, prompts, steps, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
start = time.perf_counter()
pipe = ORTStableDiffusionPipeline.from_pretrained(folder)  # default onnxruntime sessions
load = time.perf_counter() - start
pipe.set_progress_bar_config(disable=True)
calls = []
unet_call = pipe.unet.forward
def timed(*a, **k):
    t = time.perf_counter(); r = unet_call(*a, **k); calls.append(time.perf_counter() - t); return r
pipe.unet.forward = timed
latents = torch.from_numpy(np.load(out + ".latents.npy"))
start = time.perf_counter()
images = pipe(prompts, num_inference_steps=steps, guidance_scale=7.5, latents=latents, output_type="np").images
run = time.perf_counter() - start
np.save(out, images)
print(json.dumps({"load_s": load, "image_s": run / len(prompts), "unet_call_s": float(np.median(calls)),
                  "tokenizer": type(pipe.tokenizer).__name__, "versions": {"transformers": transformers.__version__,
                  "diffusers": diffusers.__version__, "onnxruntime": onnxruntime.__version__}}))
'''


def venv_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        print(f"creating {venv} and installing {' '.join(VENV_PACKAGES)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *VENV_PACKAGES], check=True)
    return python


def build_packages(work: Path, prompts: int, steps: int) -> dict:
    """Calibrate -> quantize -> compile DGQ W8A8 G8 on the embedded model; package it and the fp32 UNet."""
    from dgq_compiler.cli.main import main as dgq
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    pipeline = trained_pipeline_dir()
    folders = {"fp32": work / "pkg-fp32", "dgq-w8a8-g8": work / "pkg-dgq-w8a8-g8"}
    if all(f.is_dir() for f in folders.values()):
        return folders
    steps_run = [
        ["export", str(pipeline), "-o", str(work / "export"), "--overwrite"],
        ["calibrate", str(pipeline), "-o", str(work / "stats.json"), "--num-prompts", str(prompts), "--steps",
         str(steps), "--prompts", str(shapes_prompts_file("shapes_calibration.txt")), "--overwrite"],
        ["quantize", str(work / "stats.json"), "--preset", "dgq-w8a8-g8", "-o", str(work / "recipe.json"),
         "--overwrite"],
        ["compile", str(work / "export"), "--recipe", str(work / "recipe.json"), "-o", str(work / "compiled"),
         "--overwrite"],
        ["package", str(work / "compiled"), "--pipeline", "embedded", "-o", str(folders["dgq-w8a8-g8"]),
         "--overwrite"],
        ["package", str(work / "export" / "unet.onnx"), "--pipeline", "embedded", "-o", str(folders["fp32"]),
         "--overwrite"]]
    for argv in steps_run:
        print("dgq " + " ".join(argv), flush=True)
        if dgq(argv) != 0:
            raise SystemExit(f"dgq {argv[0]} failed")
    return folders


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/dgq-deploy-optimum", help="working folder (kept, reused)")
    parser.add_argument("--venv", default="/tmp/dgq-optimum-venv", help="optimum's virtual environment")
    parser.add_argument("--prompts", type=int, default=4, help="held-out prompts to draw (and calibration prompts)")
    parser.add_argument("--steps", type=int, default=25, help="PNDM steps")
    args = parser.parse_args()
    import numpy as np
    import torch

    from dgq_compiler.onnx_pipeline import onnx_unet_pipeline
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    python = venv_python(Path(args.venv))
    folders = build_packages(work, args.prompts, args.steps)
    prompts = shapes_prompts_file("shapes_heldout.txt").read_text().splitlines()[:args.prompts]
    latents = torch.randn(len(prompts), 4, 16, 16, generator=torch.Generator().manual_seed(0))
    rows = []
    for name, folder in folders.items():
        out = work / f"images-{name}"
        np.save(str(out) + ".latents.npy", latents.numpy())
        done = subprocess.run([str(python), "-c", CHILD, str(folder), json.dumps(prompts), str(args.steps), str(out)],
                              capture_output=True, text=True, cwd="/tmp")
        if done.returncode != 0:
            print(f"{name}: optimum FAILED\n{done.stderr[-3000:]}")
            rows.append((name, "FAILED", None))
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        optimum_images = np.load(str(out) + ".npy")
        start = time.perf_counter()
        ours = onnx_unet_pipeline(trained_pipeline_dir(), folder / "unet" / "model.onnx")
        here = ours(prompts, num_inference_steps=args.steps, guidance_scale=7.5, latents=latents,
                    output_type="np").images
        result["here_image_s"] = (time.perf_counter() - start) / len(prompts)
        result["max_abs_diff_vs_here"] = float(np.abs(optimum_images - here).max())
        rows.append((name, "ok", result))
    print()
    print(f"optimum ORTStableDiffusionPipeline on dgq package folders ({len(prompts)} held-out prompts, "
          f"{args.steps} PNDM steps, 32x32, default sessions)")
    for name, status, r in rows:
        if r is None:
            print(f"  {name:12s} {status}")
            continue
        print(f"  {name:12s} {status}: load {r['load_s']:.1f} s, {r['image_s']:.2f} s/image, UNet call "
              f"{1000 * r['unet_call_s']:.1f} ms (median), max |optimum - diffusers+onnxruntime UNet| "
              f"{r['max_abs_diff_vs_here']:.2e}, tokenizer {r['tokenizer']}, {r['versions']}")
    return 0 if all(status == "ok" for _n, status, _r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
