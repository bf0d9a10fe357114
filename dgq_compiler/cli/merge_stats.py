"""`dgq merge-stats`: statistics of prompt shards -> the statistics of one run (exact min/max merge)."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "merge-stats", help="merge calibration statistics of disjoint prompt shards (exact)",
        description="Merge statistics files written by `dgq calibrate --shard I/N` (or on other machines) into "
                    "the statistics one run over all their prompts would have written, byte for byte.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("parts", nargs="+", help="statistics manifests (.json) to merge")
    p.add_argument("-o", "--output", required=True, help="merged statistics manifest to write (.json)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.calibrate.stats import CalibrationStats, merge_stats
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.io import output_manifest

    out = output_manifest(args.output, args.overwrite)
    parts = [CalibrationStats.load(p) for p in args.parts]
    merged = merge_stats(parts)
    merged.save(out, overwrite=args.overwrite)
    rows = [[p, len(s.prompt_indices)] for p, s in zip(args.parts, parts)]
    rows.append([f"-> {out}", len(merged.prompt_indices)])
    print(format_table(["statistics", "prompts"], rows, title=f"merged {len(parts)} parts, T = {merged.T}"))
    return 0
