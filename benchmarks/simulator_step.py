"""Benchmark: one UNet step (batch 2 = cond + uncond) in the integer simulator vs onnxruntime on the same
compiled graph. Budget (DESIGN.md section 9): simulator <= 3x onnxruntime.

    python benchmarks/simulator_step.py                          # tiny model, W8A8 G8 and W4A6 G16 (random recipes)
    python benchmarks/simulator_step.py --sd14 DIR               # also a compiled SD v1.4 folder (unet.onnx [+ .data])
    python benchmarks/simulator_step.py --build-sd14 WORKDIR     # export + compile SD v1.4 (W8A8 G8) into WORKDIR first

onnxruntime runs with basic graph optimisations (the compiled graphs' asymmetric per-channel activation zero points
make its extended QDQ fusions fail or change numerics). Both get the same number of threads (--threads, default:
all cores): onnxruntime's intra-op pool and torch's (the simulator's BLAS / int8 / conv engine). Times are best-of
and median over the repeats (the machine may be shared: best-of is the less noisy figure; the ratio uses it).
The SD v1.4 step is heavy (~13 GB for onnxruntime, ~7 GB for the simulator, minutes): run it once.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: shared benchmark and test helpers
from benchmarks.rss import PeakRss  # noqa: E402


def compile_random(model_name: str, preset_name: str, work: Path, export_dir: Path | None = None) -> Path:
    from dgq_compiler.compile import compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.export import export_unet
    from tests.random_recipes import random_recipe
    from models.loader import get_unet
    from models.zoo import zoo_config

    export_dir = export_dir or work / f"{model_name}-export"
    if not (export_dir / "unet.onnx").is_file():
        unet = get_unet(model_name, seed=0)
        export_unet(unet, export_dir, model_name=model_name, progress=lambda m: print("  " + m))
        del unet
    out = work / f"{model_name}-{preset_name}"
    if not (out / "unet.onnx").is_file():
        recipe = random_recipe(zoo_config(model_name), preset(preset_name), list(range(981, 0, -40)), seed=0,
                               model_name=model_name)
        compile_graph(export_dir, recipe, out, validate=False, progress=lambda m: print("  " + m))
    return out / "unet.onnx"


def _ort_worker(graph: str, latent: int, repeats: int, threads: int, out: str, queue) -> None:
    """onnxruntime timing in a child process, so its memory is gone before the simulator runs."""
    import numpy as np
    import onnx

    from dgq_compiler import runtime

    feeds = runtime.example_feeds(onnx.load(graph, load_external_data=False), latent, 2, 0, 500.0)
    with PeakRss() as mem:  # verify's onnxruntime reference mode
        session = runtime.session(graph, "basic", threads=threads, log_severity=3)
        y = session.run(None, feeds)[0]  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
    np.save(out, y)
    queue.put((times, mem.peak))


def time_step(graph: Path, latent: int, repeats: int, threads: int) -> dict:
    import multiprocessing as mp

    import numpy as np
    import onnx

    from dgq_compiler.runtime import example_feeds
    from simulator.executor import Simulator

    row = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_ort_worker, args=(str(graph), latent, repeats, threads, f"{tmp}/y.npy", queue))
        child.start()
        ort_times, row["ort_peak"] = queue.get()
        row["ort"], row["ort_median"] = min(ort_times), statistics.median(ort_times)
        child.join()
        ort_out = np.load(f"{tmp}/y.npy")
    feeds = example_feeds(onnx.load(str(graph), load_external_data=False), latent, 2, 0, 500.0)
    with PeakRss() as mem:
        sim = Simulator(str(graph), "generic-npu")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = sim.run(feeds)
            times.append(time.perf_counter() - start)
        row["sim"], row["sim_median"] = min(times), statistics.median(times)
        row["sim_peak"] = mem.peak
    y = result.outputs[sim.output_names[0]]
    row["rel_rms"] = float(np.sqrt(np.mean((y - ort_out) ** 2)) / np.sqrt(np.mean(ort_out ** 2)))
    row["integer_ops"] = sum(1 for s in result.stats.nodes.values() if s.path in ("integer", "shift-add"))
    row["fallbacks"] = sum(1 for s in result.stats.nodes.values() if s.path.startswith("float ("))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd14", default=None, help="a compiled SD v1.4 folder or unet.onnx to time")
    parser.add_argument("--build-sd14", default=None, metavar="WORKDIR",
                        help="export + compile SD v1.4 (random weights, W8A8 G8) into WORKDIR, then time it")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per graph for the tiny model")
    parser.add_argument("--sd-repeats", type=int, default=1, help="timed runs for SD v1.4 (each takes minutes)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both onnxruntime and the simulator")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory(prefix="dgq-simbench-") as tmp:
        for name in ("dgq-w8a8-g8", "dgq-w4a6-g16"):
            graph = compile_random("tiny", name, Path(tmp))
            rows.append(("tiny", name, 16, time_step(graph, 16, args.repeats, args.threads)))
        sd = Path(args.sd14) if args.sd14 else None
        if args.build_sd14:
            sd = compile_random("sd-v1.4", "dgq-w8a8-g8", Path(args.build_sd14))
        if sd is not None:
            sd = sd / "unet.onnx" if sd.is_dir() else sd
            rows.append(("sd-v1.4", sd.parent.name, 64, time_step(sd, 64, args.sd_repeats, args.threads)))
    print(f"\n{'model':<9}{'graph':<16}{'latent':>7}{'ort s':>9}{'sim s':>9}{'ratio':>7}{'budget':>8}"
          f"{'median':>8}{'ort GB':>8}{'sim GB':>8}{'rel rms':>10}{'int ops':>8}{'float':>6}")
    for model, graph, latent, r in rows:
        ratio = r["sim"] / r["ort"]
        print(f"{model:<9}{graph:<16}{latent:>7}{r['ort']:>9.2f}{r['sim']:>9.2f}{ratio:>7.2f}"
              f"{'ok' if ratio <= 3 else 'OVER':>8}{r['sim_median'] / r['ort_median']:>8.2f}"
              f"{r['ort_peak'] / 1e9:>8.2f}{r['sim_peak'] / 1e9:>8.2f}"
              f"{r['rel_rms']:>10.2e}{r['integer_ops']:>8}{r['fallbacks']:>6}")
    print(f"one step = one UNet forward, batch 2, {args.threads} threads each; times best-of; ratio = simulator / "
          "onnxruntime best-of (budget <= 3x), median = the ratio of medians; rel rms = free-running simulator vs "
          "onnxruntime output")


if __name__ == "__main__":
    main()
