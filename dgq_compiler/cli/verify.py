"""`dgq verify`: the integer simulator against onnxruntime on a compiled graph, per quantized tensor."""
from __future__ import annotations

from dgq_compiler.cli import argtypes
from dgq_compiler.cli.graph_args import add_graph_and_target


def register(sub) -> None:
    p = sub.add_parser(
        "verify", help="simulate a compiled graph in integer arithmetic and compare it with onnxruntime",
        description="Run the compiled graph in the bit-accurate integer simulator (the target's accumulator "
                    "width and epilogue arithmetic) and in onnxruntime (float32 QDQ) on the same random inputs "
                    "at several timesteps. Reports, per quantized tensor, the code mismatch rate and the largest "
                    "LSB difference; accumulator overflows seen; the final output error. Exits 1 when a figure "
                    "is beyond the target's verify tolerance.",
        formatter_class=argtypes.HelpFormatter)
    add_graph_and_target(p)
    p.add_argument("--timesteps", type=argtypes.timesteps, default=None,
                   help="comma-separated timesteps; none: the first, middle and last calibrated step")
    p.add_argument("--batch", type=argtypes.batch, default=2, help="batch (2 = cond + uncond)")
    p.add_argument("--latent-size", type=argtypes.latent_size, default=None,
                   help="latent height/width; none: from compile.json/export.json beside the graph, or the model")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the random inputs")
    p.add_argument("--json", default=None, help="also write the full report to this JSON file")
    p.add_argument("--all-tensors", action="store_true", help="list every tensor, not only the 25 worst")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(run=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from dgq_compiler.cli.graph_args import ort_errors, quiet_onnxruntime, read_graph
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable, relative_path, report_json, write_text_atomic
    from dgq_compiler.verify import verify_graph
    from simulator.targets import load_target

    if args.json:
        check_writable(args.json, overwrite=args.overwrite)
    graph = read_graph(args.graph, "compiled")[0]
    lowered_for = _lowered_for(graph)
    if lowered_for:  # an integer-lowered graph: its accumulators against the simulator's integer kernels
        return _run_lowered(args, graph, lowered_for)
    target = load_target(args.target)  # a bad target name fails before the progress bar starts
    quiet_onnxruntime()
    bar = tqdm(desc="verify", unit="stage", leave=False)

    def progress(msg):
        bar.set_postfix_str(msg)
        bar.update(1)

    try:
        report = verify_graph(graph, target, args.timesteps, args.batch, args.latent_size,
                              args.seed, progress=progress)
    except ort_errors() as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        raise DgqError(f"onnxruntime cannot run {str(graph)!r} at batch {args.batch}, latent size "
                       f"{args.latent_size or 'from compile.json'}: {reason}") from None
    finally:
        bar.close()
    if args.json:  # paths relative to the JSON file, timings apart: identical runs give identical files
        doc = {**json.loads(report.to_json()), "graph": relative_path(graph, Path(args.json).parent)}
        write_text_atomic(args.json, report_json(doc))
    tol = report.tolerance
    rows = sorted(report.tensors, key=lambda r: (-r.mismatch_rate, -r.max_lsb, r.module))
    shown = rows if args.all_tensors else rows[:25]
    print(format_table(
        ["module", "role", "quantizer", "bits", "axis", "G", "codes", "mismatch rate", "max LSB"],
        [[r.module, r.role, r.quantizer, r.bits, r.axis, r.groups, r.codes, f"{r.mismatch_rate:.4%}", r.max_lsb]
         for r in shown],
        title=f"per-tensor codes, simulator vs onnxruntime ({len(shown)} of {len(rows)} tensors, worst first)"))
    print()
    if report.overflows:
        print(format_table(["node", "op", "overflows", "peak |acc|", "acc bits"],
                           [[o.node, o.op_type, o.overflows, o.peak, o.acc_bits] for o in report.overflows],
                           title="accumulator overflows"))
        print()
    if report.float_fallbacks:
        print(format_table(["node", "why not integer"], [[k, v] for k, v in report.float_fallbacks.items()],
                           title="quantized ops run in float32"))
        print()
    worst_rate = max((r.mismatch_rate for r in rows), default=0.0)
    worst_lsb = max((r.max_lsb for r in rows), default=0)
    summary = [
        ["graph", report.graph], ["target", report.target],
        ["inputs", f"batch {report.batch}, latent {report.latent_size}x{report.latent_size}, seed {args.seed}"],
        ["quantized tensors", len(rows)], ["integer / shift-add ops", report.integer_ops],
        ["quantized ops in float32", len(report.float_fallbacks)],
        ["worst code mismatch rate", f"{worst_rate:.4%}  (tolerance {tol['max_code_mismatch_rate']:.2%})"],
        ["largest LSB difference", f"{worst_lsb}  (tolerance {tol['max_lsb_diff']})"],
        ["accumulator overflows", sum(o.overflows for o in report.overflows)],
        *[[f"output error @ t={t:g}", f"{e:.3g}  (tolerance {tol['max_output_error']:g}); "
           f"free-running {report.free_output_error[t]:.3g}"] for t, e in report.output_error.items()],
        ["time (onnxruntime / simulator)", f"{report.seconds['ort']:.1f} s / {report.seconds['simulator']:.1f} s"],
        ["verdict", "PASS" if report.passed else f"FAIL ({len(report.failures)} figures beyond tolerance)"],
    ]
    for failure in report.failures[:10]:
        print(f"  beyond tolerance: {failure}")
    print(format_table(["verify", ""], summary))
    return 0 if report.passed else 1


def _lowered_for(graph) -> str | None:
    """The target a graph was lowered for (model metadata dgq.lowered), or None for a QDQ graph."""
    import onnx

    from passes.contract import LOWERED

    model = onnx.load(str(graph), load_external_data=False)  # read_graph has checked it is a readable model
    return {p.key: p.value for p in model.metadata_props}.get(LOWERED)


def _run_lowered(args, graph, lowered_for: str) -> int:
    """An integer-lowered graph: its int32 accumulators (onnxruntime) vs the simulator's integer kernels."""
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import write_text_atomic
    from dgq_compiler.verify.lowering import verify_lowered

    if args.target != lowered_for:
        raise DgqError(f"{args.graph!r} was lowered for {lowered_for}: verify it with --target {lowered_for}")
    report = verify_lowered(graph, args.timesteps, args.batch, args.seed, args.latent_size)
    if args.json:
        write_text_atomic(args.json, report.to_json())
    ops = sorted(report.ops, key=lambda o: (-o.mismatches, -o.code_mismatches, o.module))
    shown = ops if args.all_tensors else ops[:25]
    print(format_table(["module", "grouping", "kernel", "accumulators", "acc elements", "differing", "max |diff|",
                        "codes differing"],
                       [[o.module, o.grouping, o.kernel, o.accumulators, o.elements, o.mismatches, o.max_abs_diff,
                         o.code_mismatches] for o in shown],
                       title=f"int32 accumulators, onnxruntime vs simulator ({len(shown)} of {len(ops)} ops)"))
    print()
    summary = [["graph", report.graph], ["target", lowered_for],
               ["timesteps", ", ".join(f"{t:g}" for t in report.timesteps)],
               ["lowered ops compared", len(ops)],
               *([["QLinear ops (requantized, not compared)", report.requantized]] if report.requantized else []),
               ["accumulator elements", sum(o.elements for o in ops)],
               ["differing accumulators", sum(o.mismatches for o in ops)],
               ["differing codes", sum(o.code_mismatches for o in ops)],
               ["verdict", "EXACT (bit for bit)" if report.exact else "NOT EXACT"]]
    print(format_table(["verify", ""], summary))
    return 0 if report.exact else 1
