"""Real model sizes on one 24 GB machine: every stage's peak memory and time, SD v1.4 and SDXL.

    python benchmarks/scale_sdxl.py [--work DIR] [--keep] [--lock /tmp/dgq-heavy.lock]

One run, each stage a separate `dgq` process whose peak memory and wall time are printed: the larger of
its largest process's peak RSS (wait4) and the peak sum of Pss over its process tree (benchmarks/rss.py),
so stages that start child processes are measured whole:
  1. an SDXL-architecture pipeline with random weights, built offline (benchmarks/scale_pipelines.py:
     the same UNet weights as the zoo's sdxl-base, two one-layer text encoders of SDXL's widths, a small VAE)
  2. dgq export sdxl-base      (zoo architecture, random weights; budget 12 GB; prints the validation error)
  3. dgq export sd-v1.4        (budget 6 GB)   3b. dgq export sdxl-turbo (budget 12 GB)
  4. dgq calibrate (1 prompt, 2 steps, 32x32 latent)   5. dgq quantize (dgq-w8a8-g8)
  6. dgq compile --static      7. dgq verify (simulator, 16x16 latent)   8. dgq cost (the graph)
Stages 4-8 have a 20 GB budget. With --sd14-pipeline, `dgq run --quick` on that SD v1.4 folder (512 px)
follows, budget 16 GB. With --lock, each heavy stage (all but the pipeline build) runs while
this process holds that lock (shared machines), released between stages.
Heavy: about an hour and up to ~30 GB of disk in --work.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.rss import PeakTreePss  # noqa: E402

BUDGET_GB = {"export sd-v1.4": 6, "export sdxl-base": 12, "export sdxl-turbo": 12, "dgq run --quick (SD v1.4, 512 px)": 16}
STAGE_BUDGET_GB = 20


def run_stage(name: str, argv: list[str], log: Path) -> dict:
    """Run one stage as a child process; its peak RSS (with its children) from wait4, its wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        with PeakTreePss(child.pid) as tree:
            _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    largest = usage.ru_maxrss / 1024**2  # kB -> GB: the largest single process of the stage
    peak = max(largest, tree.peak / 1024**3)  # the whole process tree at once (a stage may start children)
    budget = BUDGET_GB.get(name, STAGE_BUDGET_GB)
    row = {"stage": name, "exit": child.returncode, "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
           "largest_process_rss_gb": round(largest, 2), "tree_pss_gb": round(tree.peak / 1024**3, 2),
           "budget_gb": budget, "within": child.returncode == 0 and peak <= budget}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--lock", type=Path, help="hold this lock file during each stage")
    parser.add_argument("--skip-sd14", action="store_true", help="skip the SD v1.4 export")
    parser.add_argument("--skip-turbo", action="store_true", help="skip the SDXL-Turbo export")
    parser.add_argument("--pipeline", type=Path, help="an SDXL pipeline folder scale_pipelines.py built (default: build one)")
    parser.add_argument("--sd14-pipeline", type=Path,
                        help="also run `dgq run --model DIR --quick` (512 px, budget 16 GB) on this SD v1.4 folder")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="dgq-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stages.log"
    dgq = [sys.executable, "-m", "dgq_compiler"]
    pipe = args.pipeline or work / "sdxl-pipeline"
    stages = [] if args.pipeline else [("build SDXL pipeline", [sys.executable, str(ROOT / "benchmarks" /
                                                                                   "scale_pipelines.py"), "sdxl-base", str(pipe)])]
    stages.append(("export sdxl-base", dgq + ["export", "sdxl-base", "-o", str(work / "sdxl"), "--overwrite"]))
    if not args.skip_sd14:
        stages.append(("export sd-v1.4", dgq + ["export", "sd-v1.4", "-o", str(work / "sd14"), "--overwrite"]))
    if not args.skip_turbo:
        stages.append(("export sdxl-turbo", dgq + ["export", "sdxl-turbo", "-o", str(work / "turbo"), "--overwrite"]))
    stages += [
        ("calibrate", dgq + ["calibrate", str(pipe), "-o", str(work / "stats.json"), "--num-prompts", "1",
                             "--steps", "2", "--latent-size", "32", "--device", "cpu", "--overwrite"]),
        ("quantize", dgq + ["quantize", str(work / "stats.json"), "--preset", "dgq-w8a8-g8", "--model", str(pipe),
                            "-o", str(work / "recipe.json"), "--overwrite"]),
        ("compile --static", dgq + ["compile", str(work / "sdxl"), "--recipe", str(work / "recipe.json"),
                                    "-o", str(work / "compiled"), "--static", "--overwrite"]),
        ("verify", dgq + ["verify", str(work / "compiled"), "--latent-size", "16",
                          "--json", str(work / "verify.json"), "--overwrite"]),
        ("cost (graph)", dgq + ["cost", "--model", str(work / "compiled" / "unet.onnx"), "--bits", "W8A8"]),
    ]
    if args.sd14_pipeline:
        stages.append(("dgq run --quick (SD v1.4, 512 px)", dgq + ["run", "--model", str(args.sd14_pipeline), "--quick",
                                                                  "-o", str(work / "run-sd14"), "--overwrite"]))
    if not args.pipeline and pipe.exists():
        shutil.rmtree(pipe)
    rows, lock = [], None
    try:
        for name, argv in stages:
            if args.lock and not name.startswith("build"):  # the build holds one layer
                lock = open(args.lock, "a")
                fcntl.flock(lock, fcntl.LOCK_EX)
            rows.append(run_stage(name, argv, log))
            if lock is not None:  # released between stages, so other heavy jobs on the machine interleave
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()
                lock = None
            if rows[-1]["exit"] != 0 and name not in ("verify", "cost (graph)") and not name.startswith("dgq run"):
                print(f"{name} failed; see {log}", flush=True)
                break
        print(summary(rows, work))
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def summary(rows: list[dict], work: Path) -> str:
    """The run's stage rows (JSON, then a table) and each export's validation against torch."""
    exports = {}
    for label, folder in (("sd-v1.4", work / "sd14"), ("sdxl-base", work / "sdxl"), ("sdxl-turbo", work / "turbo")):
        if (folder / "export.json").is_file():
            report = json.loads((folder / "export.json").read_text())
            exports[label] = {key: report[key] for key in ("max_abs_error", "tolerance", "latent_size")}
    lines = [json.dumps({"stages": rows, "exports": exports}, indent=1),
             f"\n{'stage':24} {'exit':>4} {'seconds':>8} {'peak GB':>8} {'budget':>7}"]
    for r in rows:
        lines.append(f"{r['stage']:24} {r['exit']:>4} {r['seconds']:>8.1f} {r['peak_rss_gb']:>8.2f} {r['budget_gb']:>6} "
                     f"{'ok' if r['within'] else 'OVER/FAILED'}")
    for label, e in exports.items():
        lines.append(f"export {label}: max abs error {max(e['max_abs_error'].values()):.3g} "
                     f"(tolerance {e['tolerance']:g}, latent {e['latent_size']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
