"""Export the SD v1.4 UNet architecture (random weights, batch 2, 64x64 latent) and report time and peak memory.

    python benchmarks/export_sd14.py [--keep DIR]

Prints the stage times from the export report and the process's peak resident memory. The weights are
generated tensor by tensor from the seed (`export_model`), so the peak is one copy of the weights plus the
validation activations. Heavy: minutes and ~5 GB; run it alone.
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

    from dgq_compiler.export import export_model

    work = Path(tempfile.mkdtemp(prefix="dgq-bench-"))
    out = args.keep or work / "sd-v1.4"
    try:
        start = time.perf_counter()
        report = export_model("sd-v1.4", out, batch=2, latent_size=64, seed=0)
        total = time.perf_counter() - start
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(json.dumps({
            "model": "sd-v1.4", "parameters": report.parameters, "external_data": report.external_data,
            "seconds": {**report.seconds, "total": round(total, 1)},
            "max_abs_error": report.max_abs_error, "peak_rss_gb": round(peak_gb, 2),
            "files_bytes": sizes}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
