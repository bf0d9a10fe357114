"""`dgq sensitivity`: MixDQ's metric-decoupled per-layer sensitivity table (JSON) and figure."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "sensitivity", help="per-layer sensitivity to 4/8-bit weights and 6/8-bit inputs (MixDQ, for dgq allocate)",
        description="Quantize one Conv/Linear at a time (weights at 4 and 8 bits, its input at 6 and 8 bits, torch "
                    "fake-quant with the recipe's arithmetic) and measure the error of the noise prediction on a few "
                    "recorded FP UNet calls of calibration prompts. Cross-attention to_k/to_v (text-carrying) are "
                    "scored on the guidance direction eps_cond - eps_uncond (text alignment), the rest on the whole "
                    "prediction (content); each class is normalised on its own. Writes the table as JSON.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("stats", help="statistics manifest from `dgq calibrate`")
    p.add_argument("-o", "--output", required=True, help="sensitivity table to write (.json)")
    p.add_argument("--preset", default="mixdq-w5a8",
                   help="the configuration whose quantizers are measured (its mixed budgets are ignored here)")
    p.add_argument("--model", default=None,
                   help="'embedded', 'tiny' or a diffusers pipeline folder; None: the model the statistics name")
    p.add_argument("--prompts", default=None,
                   help="prompt file (default: the model's calibration prompts); the first --num-prompts are used")
    p.add_argument("--num-prompts", type=int, default=4, help="prompts sampled for the recorded calls")
    p.add_argument("--calls", type=int, default=6, help="UNet calls kept, spread over the schedule")
    p.add_argument("--steps", type=int, default=25, help="denoising steps of the recorded sampling run")
    p.add_argument("--guidance", type=float, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed + i")
    p.add_argument("--figure", default=None, metavar="PNG", help="also plot the table")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, use_pndm
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.config import resolve_config
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable
    from dgq_compiler.mixdq.sensitivity import measure, record_calls
    from dgq_compiler.run import default_guidance, default_prompt_files, resolve_model

    for flag, value, lo, hi in (("--num-prompts", args.num_prompts, 1, 64), ("--calls", args.calls, 1, 100),
                                ("--steps", args.steps, 2, 1000)):
        if not lo <= value <= hi:
            raise DgqError(f"{flag} must be in {lo}..{hi}, got {value}")
    if args.guidance is not None and not 1.0 < args.guidance < float("inf"):  # NaN fails the comparison too
        raise DgqError(f"--guidance must be a finite number > 1, got {args.guidance}")
    if Path(args.output).suffix != ".json":
        raise DgqError(f"--output must end in .json, got {args.output!r}")
    check_writable(args.output, args.overwrite)
    if args.figure:
        check_writable(args.figure, args.overwrite)
    config = resolve_config(args.preset)
    stats = CalibrationStats.load(args.stats)
    source, label = resolve_model(args.model or stats.model_name)
    if args.guidance is None:
        args.guidance = default_guidance(source)
    prompts = read_prompts(args.prompts or default_prompt_files(source)[0])[: args.num_prompts]
    pipe = open_pipeline(source, seed=stats.sampling.get("model_seed") or 0, device="cpu")
    use_pndm(pipe)
    start = time.perf_counter()
    calls = record_calls(pipe, prompts, [args.seed + i for i in range(len(prompts))], args.steps, args.guidance,
                         args.calls, latent_size=stats.resolution[0])
    table = measure(pipe, stats, config, calls, progress=True, prompts=len(prompts))
    table.save(args.output, overwrite=args.overwrite)
    if args.figure:
        from dgq_compiler.mixdq.figures import sensitivity_figure

        sensitivity_figure(table, args.figure)
    seconds = time.perf_counter() - start
    rows = []
    for cls in ("alignment", "content"):
        ranked = sorted((layer for layer in table.layers if layer.metric == cls),
                        key=lambda layer: -(layer.weight["4"] + layer.act["6"]))
        for layer in ranked[:5]:
            rows.append([cls, layer.module, f"{layer.weight['4']:.3g}", f"{layer.act['6']:.3g}", f"{layer.params}"])
    print(format_table(["class", "most sensitive layers", "W4", "A6", "params"], rows))
    print(format_table(["sensitivity", label], [
        ["table", f"{args.output}{' + ' + args.figure if args.figure else ''}"],
        ["layers", f"{len(table.layers)} ({sum(l.metric == 'alignment' for l in table.layers)} scored on alignment)"],
        ["measured on", f"{len(calls)} UNet calls of {len(prompts)} prompts, {config.name} quantizers"],
        ["time", f"{seconds:.1f} s"]]))
    return 0
