"""Benchmark: a DGQ QDQ UNet call in a default onnxruntime session, per-axis against blocked quantizers, and fp32.

What `dgq run`'s images-and-fidelity stage and `dgq ablate` pay per configuration: the embedded model's UNet at
the quality stage's batch (64 prompts x CFG = 128) and latent (16), in `onnxruntime.InferenceSession(path)` with
its defaults. For each preset the recipe is compiled twice from the same export: with the standard pass list
(last-axis group quantizers in the blocked form, passes/block_axis_quantizers.py) and with that pass left out
(every group quantizer a per-axis QuantizeLinear/DequantizeLinear, as before). Printed per graph: the median call
(after one warm-up), its ratio to fp32, QuantizeLinear's share of kernel time (one profiled call), and whether
the two forms' outputs are equal bit for bit; the machine's load average beside the figures.

    python benchmarks/qdq_graph_speed.py --run-dir DIR [--presets dgq-w8a8-g8,dgq-w4a6-g16] [--batch 128]
                                         [--latent 16] [--runs 5] [--workdir DIR] [--reference-batch 2]

With --reference-batch N, each form of each preset also runs once in onnx.reference at batch N (its own child
process, so its peak RSS is that run's): the blocked form's parameters are repeated block_size times there.

DIR is a `dgq run` output folder of the embedded model (its export/ and recipes/<preset>.json are read;
`dgq run -o DIR --presets dgq-w8a8-g8,dgq-w4a6-g16 --images 0` makes one). Timed: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
from benchmarks.rss import peak_rss  # noqa: E402


def compile_form(export_dir: Path, recipe, blocked: bool):
    """The compiled QDQ graph (ModelProto) of `recipe` with or without block_axis_quantizers."""
    from passes.base import PassContext
    from passes.block_axis_quantizers import BlockAxisQuantizers
    from passes.graph_io import export_model, load_graph
    from passes.manager import run_passes
    from passes.module_map import load_module_map
    from passes.pipeline import compile_passes

    passes = [p for p in compile_passes() if blocked or p.name != BlockAxisQuantizers.name]
    ctx = PassContext(recipe, load_module_map(export_dir / "module_map.json"))
    return export_model(run_passes(passes, load_graph(export_dir / "unet.onnx"), ctx), ctx, {})


def measure(graph, feed: dict, runs: int, profile_dir: str) -> dict:
    from dgq_compiler import runtime

    sess = runtime.session(graph, "default", profile_prefix=os.path.join(profile_dir, "p"))
    out = sess.run(None, feed)[0]  # warm-up, profiled
    kinds, _ = runtime.kernel_time_by_op(sess.end_profiling())
    times = runtime.timed_runs(sess, feed, runs)
    total = sum(kinds.values()) or 1.0
    return {"median": statistics.median(times), "quantize_share": kinds.get("QuantizeLinear", 0.0) / total,
            "out": out}


def reference_child(run_dir: Path, preset: str, form: str, batch: int, latent: int, out: str) -> None:
    """In a child process: one onnx.reference run; prints seconds and peak RSS, saves the output."""
    import time

    import numpy as np
    from onnx.reference import ReferenceEvaluator

    from dgq_compiler import runtime
    from dgq_compiler.recipe import Recipe

    model = compile_form(run_dir / "export", Recipe.load(run_dir / "recipes" / f"{preset}.json"), form == "blocked")
    feed = runtime.example_feeds(model, (latent, latent), batch=batch, seed=0, timestep=501.0)
    start = time.perf_counter()
    np.save(out, ReferenceEvaluator(model).run(None, feed)[0])
    seconds = time.perf_counter() - start
    print(f"{seconds:.1f} {peak_rss()}")


def reference_rows(args, preset: str, work: str) -> list[str]:
    import subprocess

    import numpy as np

    outs, lines = {}, []
    for form in ("per-axis", "blocked"):
        outs[form] = os.path.join(work, f"reference-{preset}-{form}.npy")
        done = subprocess.run([sys.executable, __file__, "--run-dir", str(args.run_dir), "--reference-child",
                               f"{preset},{form},{outs[form]}", "--reference-batch", str(args.reference_batch),
                               "--latent", str(args.latent)], capture_output=True, text=True, check=True)
        seconds, peak = done.stdout.split()[-2:]
        lines.append(f"{preset:<16} {form:<10} onnx.reference batch {args.reference_batch}: {float(seconds):6.1f} s, "
                     f"peak RSS {int(peak) / 2 ** 30:.2f} GiB")
    same = np.array_equal(np.load(outs["per-axis"]), np.load(outs["blocked"]))
    return lines + [f"{preset:<16} onnx.reference outputs equal bit for bit: {'yes' if same else 'NO'}"]


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> int:
    import onnx

    from dgq_compiler import runtime
    from dgq_compiler.recipe import Recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--presets", default="dgq-w8a8-g8,dgq-w4a6-g16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="where the profiles go (a temporary folder)")
    parser.add_argument("--reference-batch", type=int, default=0, help="also run onnx.reference at this batch")
    parser.add_argument("--reference-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_child:
        preset, form, out = args.reference_child.split(",")
        reference_child(args.run_dir, preset, form, args.reference_batch, args.latent, out)
        return 0
    export_dir = args.run_dir / "export"
    if not (export_dir / "unet.onnx").is_file():
        parser.error(f"--run-dir {args.run_dir}: no export/unet.onnx (expected a `dgq run` output folder)")
    work = tempfile.mkdtemp(prefix="qdq-speed-", dir=args.workdir)
    fp32 = onnx.load(str(export_dir / "unet.onnx"))
    feed = runtime.example_feeds(fp32, (args.latent, args.latent), batch=args.batch, seed=0, timestep=501.0)
    print(f"UNet call, batch {args.batch}, latent {args.latent}, default onnxruntime session, median of {args.runs} "
          f"after one warm-up; {load()} at start")
    base = measure(fp32, feed, args.runs, work)
    rows = [("fp32", "", base["median"], base["quantize_share"], "")]
    for preset in args.presets.split(","):
        recipe_path = args.run_dir / "recipes" / f"{preset}.json"
        if not recipe_path.is_file():
            parser.error(f"--run-dir {args.run_dir}: no recipes/{preset}.json")
        recipe = Recipe.load(recipe_path)
        results = {}
        for form, blocked in (("per-axis", False), ("blocked", True)):
            results[form] = measure(compile_form(export_dir, recipe, blocked), feed, args.runs, work)
        same = bool((results["per-axis"]["out"] == results["blocked"]["out"]).all())
        for form, r in results.items():
            rows.append((preset, form, r["median"], r["quantize_share"], "yes" if same else "NO"))
        print(f"  {preset} done; {load()}", flush=True)
    print(f"{'graph':<16} {'quantizers':<10} {'call s':>8} {'x fp32':>7} {'Q share':>8} {'same out':>9}")
    for name, form, seconds, share, same in rows:
        print(f"{name:<16} {form:<10} {seconds:8.3f} {seconds / base['median']:7.2f} {share:8.1%} {same:>9}")
    reference = [line for preset in args.presets.split(",") for line in reference_rows(args, preset, work)] \
        if args.reference_batch else []
    print("\n".join(reference + [load() + " at end"]))
    return 0 if all(r[4] != "NO" for r in rows) and not any(line.endswith("NO") for line in reference) else 1


if __name__ == "__main__":
    sys.exit(main())
