"""Time `dgq cost` for every standard configuration of SD v1.4 and SDXL (base and turbo): seconds, no weights.

For each model: one `dgq cost` process printing the whole standard table (FP32, W8A8, W8A6, W4A8, W4A6
x G in {8, 16}), one process per configuration (`--bits ... --groups ... --json`), and the in-process
split (meta-tensor count vs the arithmetic of all rows). Prints the figures and the TBOPs it got.
Run:  python benchmarks/cost_all.py [--convention paper|exact] [--models sd-v1.4 sdxl-base ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from simulator.cost import STANDARD_BITS, STANDARD_GROUPS, load_inventory, standard_rows


def _timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dgq_compiler.cli.main", *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"dgq {' '.join(argv)} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sd-v1.4", "sdxl-base", "sdxl-turbo"])
    parser.add_argument("--convention", choices=("paper", "exact"), default="paper")
    args = parser.parse_args()
    configs = [("W32A32", 1)] + [(b, g) for b in STANDARD_BITS[1:] for g in STANDARD_GROUPS]
    print(f"convention {args.convention}; wall times of whole `dgq cost` processes (imports included)")
    print(f"{'model':11} {'table s':>8} {'per-config s (min/mean/max)':>28} {'count s':>8} {'rows ms':>8}  TBOPs")
    worst = 0.0
    for model in args.models:
        table_s, _ = _timed(["cost", "--model", model, "--convention", args.convention])
        per_config, tbops = [], []
        for bits, groups in configs:
            argv = ["cost", "--model", model, "--bits", bits, "--convention", args.convention, "--json"]
            seconds, out = _timed(argv + ([] if bits == "W32A32" else ["--groups", str(groups)]))
            per_config.append(seconds)
            tbops.append(json.loads(out)["tbops"])
        start = time.perf_counter()
        inventory = load_inventory(model, convention=args.convention)
        count_s = time.perf_counter() - start
        start = time.perf_counter()
        standard_rows(inventory, convention=args.convention)
        rows_ms = (time.perf_counter() - start) * 1e3
        worst = max(worst, table_s, *per_config)
        spread = f"{min(per_config):.2f} / {sum(per_config) / len(per_config):.2f} / {max(per_config):.2f}"
        print(f"{model:11} {table_s:8.2f} {spread:>28} {count_s:8.2f} {rows_ms:8.2f}  "
              + " ".join(f"{t:.4g}" for t in tbops))
    print(f"slowest single `dgq cost` call: {worst:.2f} s ({len(configs)} configurations per model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
