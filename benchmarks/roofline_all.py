"""Latency and energy per UNet step and per image for every standard configuration, no weights, and how long it takes.

For each model (default: SD v1.4 at 512 px and SDXL at 1024 px, batch 2 = classifier-free guidance), builds the
inventory from the architecture config (meta tensors) and estimates FP32, W8A8, W8A6, W4A8, W4A6 x G in {8, 16}
on a target (default generic-npu); prints the figures and the wall time of each part. Light (no weights):

    python benchmarks/roofline_all.py
    python benchmarks/roofline_all.py --models sd-v2.1 sdxl-turbo --target tensorrt-int8 --steps 50
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sd-v1.4", "sdxl-base"])
    parser.add_argument("--target", default="generic-npu")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    from dgq_compiler.cli.table import format_table
    from simulator.cost import estimate, load_inventory, standard_rows
    from simulator.targets import load_target

    target = load_target(args.target)
    for model in args.models:
        start = time.perf_counter()
        inventory = load_inventory(model)      # paper convention's default resolution (SDXL: 1024 px)
        counted = time.perf_counter()
        rows = standard_rows(inventory, steps=args.steps)
        estimates = [estimate(inventory, r.bits, r.groups, target, args.steps) for r in rows]
        done = time.perf_counter()
        table = [[r.name, "-" if r.bits == "W32A32" else r.groups, round(r.tbops, 2), e.step_latency_s * 1e3,
                  e.image_latency_s, e.step_energy_j, e.step_compute_j, e.step_data_j,
                  round(e.step_dram_bytes / 1e6), round(100 * e.compute_bound_share, 1)]
                 for r, e in zip(rows, estimates)]
        h, w = inventory.resolution
        print(format_table(["config", "G", "TBOPs", "step ms", "image s", "step J", "compute J", "data J",
                            "DRAM MB/step", "compute-bound %"], table,
                           title=f"{model}, {h}x{w} px, batch {inventory.batch}, {args.steps} steps, on {target.name}"))
        print(f"wall time: inventory {counted - start:.2f} s (meta forward, no weights), "
              f"{len(rows)} configurations {done - counted:.2f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
