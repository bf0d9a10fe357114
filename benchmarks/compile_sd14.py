"""Benchmark: export the SD v1.4 UNet architecture (random weights) to fp32 ONNX, then compile it with random
valid recipes (W8A8 and W4A8, DGQ G=8, 25 steps). Prints compile time vs export time (budget <= 0.5x), peak
memory per stage (RSS sampled from /proc), and the compiled file sizes vs the cost model's predicted model size.

    python benchmarks/compile_sd14.py [--workdir DIR] [--keep]

Heavy: ~9 GB peak during export, several GB on disk, a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: shared benchmark and test helpers
from benchmarks.rss import PeakRss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="folder for the export and compiled graphs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()

    from dgq_compiler.compile import compile_graph
    from dgq_compiler.config import preset
    from dgq_compiler.export import export_unet
    from tests.random_recipes import random_recipe
    from models.loader import get_unet
    from models.zoo import zoo_config
    from simulator.cost.bits import parse_bits
    from simulator.cost.macs_from_config import inventory_from_config
    from simulator.cost.size import size_report

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dgq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    try:
        with PeakRss() as mem:
            unet = get_unet("sd-v1.4", seed=0)
            start = time.perf_counter()
            export_unet(unet, work / "export", model_name="sd-v1.4", progress=lambda m: print("  " + m))
            rows["export"] = (time.perf_counter() - start, mem.peak)
            del unet
            gc.collect()
        config = zoo_config("sd-v1.4")
        timesteps = list(range(981, 0, -40))  # 25 PNDM-like steps
        inventory = inventory_from_config(config)
        for name in ("dgq-w8a8-g8", "dgq-w4a8-g8"):
            qconfig = preset(name)
            recipe = random_recipe(config, qconfig, timesteps, seed=0, model_name="sd-v1.4")
            gc.collect()
            with PeakRss() as mem:
                start = time.perf_counter()
                report = compile_graph(work / "export", recipe, work / name, validate=(name == "dgq-w8a8-g8"),
                                       progress=lambda m: print("  " + m))
                rows[name] = (time.perf_counter() - start, mem.peak, report)
            predicted = size_report(inventory, parse_bits(f"W{qconfig.weight_bits}A{qconfig.act_bits}"),
                                    qconfig.groups, len(timesteps))
            rows[name] += (predicted,)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    export_s, export_peak = rows["export"]
    print(f"\nSD v1.4 architecture, random weights, 25 steps; work folder {work}")
    print(f"{'stage':<14}{'seconds':>9}{'x export':>10}{'peak RSS GB':>13}{'on disk MB':>12}{'predicted MB':>14}{'ratio':>8}")
    print(f"{'fp32 export':<14}{export_s:>9.1f}{1.0:>10.2f}{export_peak / 1e9:>13.2f}")
    for name in ("dgq-w8a8-g8", "dgq-w4a8-g8"):
        seconds, peak, report, predicted = rows[name]
        total = predicted.model_size_bytes + predicted.qparam_bytes
        print(f"{name:<14}{seconds:>9.1f}{seconds / export_s:>10.2f}{peak / 1e9:>13.2f}"
              f"{report.compiled_bytes / 1e6:>12.1f}{total / 1e6:>14.1f}{report.compiled_bytes / total:>8.3f}")
        print("    stage seconds: " + json.dumps(report.seconds))
    print("budget: compile <= 0.5x export time; predicted = cost model model size + quantization parameters")


if __name__ == "__main__":
    main()
