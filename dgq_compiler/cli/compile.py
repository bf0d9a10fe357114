"""`dgq compile`: fp32 export + recipe -> quantized ONNX graph + encodings.json."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "compile", help="compile an fp32 export and a recipe into a quantized ONNX graph",
        description="Rewrite the fp32 UNet graph `dgq export` wrote with the recipe's quantizers: integer weights "
                    "(INT8, packed INT4) with per-channel DequantizeLinear, per-group per-timestep activation QDQ "
                    "selected by the graph's own timestep input, log2-quantized attention probabilities (dgq "
                    "functions) with the <start> token in full precision. Writes OUTPUT/unet.onnx, encodings.json "
                    "and compile.json; checks the graph (onnx.checker full check, one onnxruntime run).",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("graph", help="export folder (unet.onnx + module_map.json) or its unet.onnx")
    p.add_argument("--recipe", required=True, help="recipe manifest (.json, its .safetensors beside it)")
    p.add_argument("-o", "--output", required=True, help="output folder to create")
    p.add_argument("--static", action="store_true",
                   help="also write one graph per calibrated step with constant scales (unet.stepNN.onnx), "
                        "all sharing one weights file")
    p.add_argument("--reference", default=None,
                   help="local diffusers pipeline/UNet folder the export came from: also report the end-to-end "
                        "output error vs the torch fake-quant UNet at every calibrated step")
    p.add_argument("--tolerance", type=argtypes.tolerance, default=None,
                   help="fake-quant point check: largest allowed fraction of quantized elements that differ from "
                        "torch fake-quant on the same input (each by at most 1 LSB) (default 1e-4)")
    p.add_argument("--check-points", choices=("auto", "yes", "no"), default="auto",
                   help="run the fake-quant point check at every calibrated step (auto: graphs under 300 MB)")
    p.add_argument("--target", default=None,
                   help="compile for a hardware target (preset: generic-npu, tensorrt-int8, onnxruntime-cpu, "
                        "onnxruntime-cpu-fast, or a .json/.toml file): the recipe is adapted to what the target "
                        "supports and compile prints what it gave up; a target that takes only constant scales gets "
                        "the static per-step graphs (check those). onnxruntime-cpu also lowers every quantized "
                        "Conv/Linear to integer ops a default onnxruntime session runs on its integer kernels (u8 "
                        "codes x s8 weights, int32 accumulators, float epilogue), exact against the simulator (check "
                        "with dgq verify), and writes lowering.json; onnxruntime-cpu-fast = the same with per-tensor "
                        "Convs/MatMuls as QLinearConv/QLinearMatMul, which requantize their output (an extra "
                        "rounding; its extra error is printed)")
    p.add_argument("--no-validate", action="store_true", help="skip the onnxruntime run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def run(args) -> int:
    from dgq_compiler.cli.graph_args import ort_errors, quiet_onnxruntime, read_graph
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.compile import DEFAULT_TOLERANCE, compile_graph
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable
    from dgq_compiler.recipe import Recipe

    check_writable(args.output, args.overwrite, kind="folder")
    graph = read_graph(args.graph, "export")[0]  # a truncated or wrong file fails here, not in the passes
    recipe = Recipe.load(args.recipe)
    reference = None
    if args.reference:
        from models.loader import load_unet
        reference = load_unet(args.reference)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    quiet_onnxruntime()
    try:
        report = compile_graph(graph, recipe, args.output, static=args.static, overwrite=args.overwrite,
                               reference_unet=reference, tolerance=tolerance, validate=not args.no_validate,
                               check_points={"auto": None, "yes": True, "no": False}[args.check_points],
                               target=args.target)
    except ort_errors() as exc:  # a recipe that passed its checks but makes a graph onnxruntime refuses
        reason = str(exc).strip().splitlines()[0][:300]
        raise DgqError(f"the compiled graph does not run in onnxruntime (recipe {args.recipe!r} does not fit "
                       f"graph {str(graph)!r}?): {reason}") from None
    print(format_table(["role", "quantizer", "bits", "axis", "tensors"], report.tensors, title="quantized tensors"))
    if report.target:
        print()
        print(format_table(["gave up", "tensors", "recipe asked", "target gets"], report.gave_up or [["nothing", 0, "", ""]],
                           title=f"adapted to {report.target}"))
    if report.kernels:
        print()
        print(format_table(["kernel", "ops", "accumulators"], report.kernels,
                           title=f"lowered for {report.target} (per op: lowering.json)"))
    ratio = report.compiled_bytes / report.fp32_bytes if report.fp32_bytes else 0.0
    if report.point_check:
        rate, lsb = report.worst_mismatch
        check = (f"passed at {len(report.point_check)} steps: {rate:.2g} of quantized elements differ (tolerance "
                 f"{report.tolerance:g}), max {lsb:g} LSB (max 1)")
    else:
        check = f"skipped (tolerance {report.tolerance:g}; --check-points yes to run it)"
        if report.target:
            check = f"replaced by the accumulator check: dgq verify {args.output} --target {report.target}"
    rows = [["graph", f"{args.output}/unet.onnx"],
            ["steps", f"{report.steps} ({', '.join(str(t) for t in report.timesteps[:6])}"
                      f"{', ...' if report.steps > 6 else ''})"],
            ["size on disk", f"{_size(report.compiled_bytes)} vs fp32 {_size(report.fp32_bytes)} ({ratio:.3f}x)"],
            ["fake-quant point check", check]]
    if report.reference_error:
        rows.append(["end-to-end vs torch UNet", ", ".join(f"t={t}: {e:.2g}" for t, e in report.reference_error.items())
                     + " (rounding flips propagate; informational)"])
    if report.fp_difference is not None:
        rows.append(["difference to fp32 graph", f"{report.fp_difference:.3g} (quantization noise, informational)"])
    if report.static_graphs:
        rows.append(["static variants", f"{len(report.static_graphs)} graphs sharing unet.onnx.data"])
    if report.fast_extra_error:
        rows.append(["fast variant vs exact", ", ".join(f"t={t}: {e:.3g}" for t, e in report.fast_extra_error.items())
                     + " (max |fast - exact| / max |exact| of the output: the requantization's extra error)"])
    rows.append(["time", ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())])
    print()
    print(format_table(["compile", ""], rows))
    return 0
