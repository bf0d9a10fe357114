"""Export the SD v1.4 UNet architecture (random weights, batch 2, 64x64 latent) and report time and peak memory.

    python benchmarks/export_sd14.py [--keep DIR]

Prints the stage times from the export report and the process's peak resident memory. Heavy: ~1 minute
and ~9 GB; run it alone.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write the export here and keep it (default: a temporary folder)")
    args = parser.parse_args()

    from dgq_compiler.export import export_unet
    from models.loader import get_unet

    work = Path(tempfile.mkdtemp(prefix="dgq-bench-"))
    out = args.keep or work / "sd-v1.4"
    try:
        start = time.perf_counter()
        unet = get_unet("sd-v1.4", seed=0)
        build = time.perf_counter() - start
        report = export_unet(unet, out, model_name="sd-v1.4", batch=2, latent_size=64)
        total = time.perf_counter() - start
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(json.dumps({
            "model": "sd-v1.4", "parameters": report.parameters, "external_data": report.external_data,
            "seconds": {"build_random_weights": round(build, 1), **report.seconds, "total": round(total, 1)},
            "max_abs_error": report.max_abs_error, "peak_rss_gb": round(peak_gb, 2),
            "files_bytes": sizes}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
