"""`dgq export`: a diffusers UNet -> validated fp32 ONNX graph + module map."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a diffusers UNet to a validated fp32 ONNX graph",
        description="Export a diffusers UNet2DConditionModel to ONNX (opset 21) with explicit "
                    "MatMul -> Softmax -> MatMul attention, write a module map beside it, and validate "
                    "the graph in onnxruntime against torch at two timesteps.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("model", help="zoo name (sd-v1.4, sd-v2.1, sdxl-base, sdxl-turbo, tiny: random weights) "
                                 "or a local diffusers pipeline or UNet folder")
    p.add_argument("-o", "--output", required=True,
                   help="output folder to create: unet.onnx, module_map.json, export.json")
    p.add_argument("--batch", type=argtypes.batch, default=2, help="batch used to trace and validate (2 = CFG)")
    p.add_argument("--latent-size", type=argtypes.latent_size, default=None,
                   help="latent height/width used to trace and validate (default: the UNet's sample_size, at most 32)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed for random weights and validation inputs")
    p.add_argument("--tolerance", type=argtypes.tolerance, default=None,
                   help="largest allowed |onnxruntime - torch| / max(1, max|torch|); None: 1e-4, or 1e-2 with --fp16")
    p.add_argument("--fp16", action="store_true",
                   help="float16 weights and arithmetic inside the graph (half the file; inputs and output stay "
                        "float32), validated against the float32 torch model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.cli.argtypes import check_attention_memory
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.export import MAX_DEFAULT_LATENT, export_model, model_config
    from dgq_compiler.io import check_writable

    check_writable(args.output, overwrite=args.overwrite, kind="folder")  # before minutes of loading and tracing
    config, _ = model_config(args.model)  # the architecture alone: the weights are read tensor by tensor
    check_attention_memory(config, args.latent_size or min(int(config["sample_size"]), MAX_DEFAULT_LATENT), args.batch)
    report = export_model(args.model, args.output, batch=args.batch, latent_size=args.latent_size,
                          seed=args.seed, tolerance=args.tolerance, overwrite=args.overwrite, float16=args.fp16)
    rows = [["graph", f"{args.output}/{report.graph}"],
            ["parameters", f"{report.parameters / 1e6:.2f} M"],
            ["external data", "yes (unet.onnx.data)" if report.external_data else "no"],
            ["weights", report.dtype],
            ["inputs", ", ".join(report.inputs)],
            *[[f"max abs error @ t={t}", f"{e:.3g}"] for t, e in report.max_abs_error.items()],
            ["tolerance", f"{report.tolerance:g}  (passed)"],
            ["time (export / save / validate)",
             " / ".join(f"{report.seconds[k]:.1f} s" for k in ("export", "save_and_check", "validate"))],
            ["time (weights: generate or read, classify)", f"{report.seconds['weights']:.1f} s"]]
    print(format_table(["export", args.model], rows))
    return 0
