"""`dgq run --quick` on a real-size pipeline folder: peak memory of the whole process tree and wall time.

    python benchmarks/scale_run.py PIPELINE [--latent-size N] [--work DIR] [--in-process] [--lock FILE]

The run's own stage lines go to stdout with, every 30 s, a line `[memory] <elapsed> s: now X GB, peak Y GB`
(sum of Pss over `dgq run` and its configuration child processes, benchmarks/rss.py), so a run stopped
early still says how far it got and what it held. The last line is a JSON row: exit code, seconds, peak
GB (the larger of the tree's peak Pss sum and the largest single process's RSS from wait4), against
DESIGN's 16 GB budget for `dgq run --quick` on an SD v1.4-size pipeline at 512 px. `--in-process` sets
DGQ_RUN_CHILD=0 (every configuration in the run's own process, as before run_child.py) to compare.
Build a random-weight SD v1.4 folder with `python benchmarks/scale_pipelines.py sd-v1.4 DIR`.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.rss import PeakTreePss, tree_pss  # noqa: E402

BUDGET_GB = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--latent-size", type=int, help="latent of calibration and images (default: the UNet's, 64)")
    parser.add_argument("--work", type=Path, help="where the report goes (default: a temporary folder, removed)")
    parser.add_argument("--in-process", action="store_true", help="no child processes (DGQ_RUN_CHILD=0)")
    parser.add_argument("--lock", type=Path, help="hold this lock file while the run runs (shared machines)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="dgq-scale-run-"))
    argv = [sys.executable, "-m", "dgq_compiler", "run", "--model", str(args.pipeline), "--quick",
            "-o", str(work / "report"), "--overwrite"]
    if args.latent_size:
        argv += ["--latent-size", str(args.latent_size)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.in_process:
        env["DGQ_RUN_CHILD"] = "0"
    lock = open(args.lock, "a") if args.lock else None
    if lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
    print(f"$ {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, cwd=ROOT)
    with PeakTreePss(child.pid) as tree:
        done = threading.Event()

        def report():
            while not done.wait(30):
                now = tree_pss(child.pid)
                tree.peak = max(tree.peak, now)  # a sample too (the sampler thread may lag on a starved machine)
                print(f"[memory] {time.perf_counter() - start:.0f} s: now {now / 1024**3:.2f} GB, "
                      f"peak {tree.peak / 1024**3:.2f} GB", flush=True)

        threading.Thread(target=report, daemon=True).start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
    seconds = time.perf_counter() - start
    if lock:
        fcntl.flock(lock, fcntl.LOCK_UN)
    code = os.waitstatus_to_exitcode(status)
    largest = usage.ru_maxrss / 1024**2
    # Pss splits shared-library pages with every other process that maps them (other jobs too): never report
    # less than the largest single process's RSS
    peak = max(tree.peak / 1024**3, largest)
    print(json.dumps({"run": "dgq run --quick", "latent_size": args.latent_size or "default",
                      "children": not args.in_process, "exit": code, "seconds": round(seconds, 1),
                      "peak_gb": round(peak, 2), "peak_tree_pss_gb": round(tree.peak / 1024**3, 2),
                      "largest_process_rss_gb": round(largest, 2),
                      "budget_gb": BUDGET_GB, "within": code == 0 and peak <= BUDGET_GB,
                      "report": str(work / "report" / "report.md")}), flush=True)


if __name__ == "__main__":
    main()
