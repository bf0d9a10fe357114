"""`dgq package`: a compiled UNet + its pipeline -> an ONNX Stable Diffusion folder in optimum's layout."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "package", help="write a complete ONNX pipeline folder (optimum's layout) around a compiled UNet",
        description="Export the pipeline's text encoder and VAE decoder to ONNX, copy its tokenizer (with the files "
                    "transformers 4.x reads), scheduler and model_index.json, and put the compiled UNet in "
                    "unet/model.onnx: a folder optimum's ORTStableDiffusionPipeline.from_pretrained loads as it is.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("compiled", help="a `dgq compile` output folder (its unet.onnx) or a compiled .onnx graph")
    p.add_argument("-o", "--output", required=True, help="output folder to create")
    p.add_argument("--pipeline", default="embedded",
                   help="the pipeline the UNet belongs to: 'embedded' (shipped model), 'tiny' or a diffusers folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.io import check_writable
    from dgq_compiler.package import package_pipeline, resolve_compiled

    resolve_compiled(args.compiled)  # bad input fails before any loading
    check_writable(args.output, overwrite=args.overwrite)
    report = package_pipeline(args.compiled, args.pipeline, args.output, overwrite=args.overwrite)
    rows = [[c, f, i, o, "-" if e is None else f"{e:.2g}", f"{b / 1e6:.2f} MB"]
            for c, f, i, o, e, b in report.components]
    print(format_table(["component", "file", "inputs", "outputs", "max error vs torch", "size"], rows,
                       title=f"dgq package: {report.output} ({report.seconds['total']:.0f} s)"))
    return 0
