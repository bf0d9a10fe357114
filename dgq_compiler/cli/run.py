"""`dgq run`: the whole job on the embedded model (or a local diffusers pipeline), with a report."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    from dgq_compiler.quality.stage import DEFAULT_IMAGES
    from dgq_compiler.run import DEFAULT_PRESETS
    from dgq_compiler.calibrate.run import SCHEDULERS

    p = sub.add_parser(
        "run", help="calibrate, quantize, compile, verify, cost and report, end to end",
        description="Run the whole pipeline on one model: export -> calibrate -> quantize (DGQ and baselines) "
                    "-> compile -> verify (generic integer NPU) and check (TensorRT-like INT8) -> cost -> "
                    "report.md with figures, all in one output folder.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("-o", "--output", default="dgq-report", help="output folder to create")
    p.add_argument("--model", default="embedded",
                   help="'embedded' (the shipped model), 'tiny' (random weights) or a local diffusers pipeline folder")
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help="comma-separated quantization presets (see `dgq quantize --list-presets`)")
    p.add_argument("--prompts", help="calibration prompt file, one per line (default: the shipped 64 captions)")
    p.add_argument("--num-prompts", type=argtypes.count, help="use only the first N calibration prompts")
    p.add_argument("--image-prompts", help="prompt file for the image grid (default: the held-out prompts)")
    p.add_argument("--num-images", type=argtypes.int_range(1, 16), default=4, help="columns of the image grid")
    p.add_argument("--images", type=argtypes.image_counts(0, 4096),
                   default=",".join(map(str, DEFAULT_IMAGES)),
                   help="quality stage: images per configuration on the held-out and the rephrased prompt set "
                        "(H,R; one number: every set), scored by the shapes evaluator (alignment, Fréchet distance, "
                        "IS-like, 95%% intervals); 0 skips the stage (default: %(default)s)")
    p.add_argument("--steps", type=argtypes.steps, default=25, help="PNDM sampling steps (calibration and images)")
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="pndm",
                   help="sampler of calibration and images, e.g. --scheduler euler --steps 4 for few-step models")
    p.add_argument("--guidance", type=argtypes.cfg_guidance, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of sampling (and of the random tiny weights)")
    p.add_argument("--latent-size", type=argtypes.latent_size, default=None,
                   help="latent height/width of calibration and images (default: the UNet's sample_size; "
                        "image pixels = 8x for SD/SDXL VAEs)")
    p.add_argument("--device", default=None,
                   help="torch device of calibration (default: cuda when present, else cpu); the ONNX stages run on CPU")
    p.add_argument("--quick", action="store_true",
                   help="try-out budget for real-size models: 2 prompts, 4 steps, 1 image, dgq-w8a8-g8 only, verify at "
                        "1 timestep and latent 32 (options given explicitly are kept); the report lists what was shortened")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.calibrate.run import read_prompts
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.io import check_writable
    from dgq_compiler.report.markdown import SUMMARY_HEADERS, summary_rows
    from dgq_compiler.run import RunOptions, run as run_all

    check_writable(args.output, args.overwrite, kind="folder")
    for prompts in (args.prompts, args.image_prompts):  # read now: the stages read them minutes later
        if prompts:
            read_prompts(prompts)

    options = RunOptions(model=args.model, presets=tuple(p.strip() for p in args.presets.split(",") if p.strip()),
                         prompts=args.prompts, num_prompts=args.num_prompts, image_prompts=args.image_prompts,
                         num_images=args.num_images, images=args.images, steps=args.steps, scheduler=args.scheduler,
                         guidance=args.guidance, seed=args.seed,
                         latent_size=args.latent_size, device=args.device, quick=args.quick)
    summary = run_all(options, args.output, overwrite=args.overwrite)
    print()
    print(format_table(SUMMARY_HEADERS, summary_rows(summary),
                       title=f"dgq run: {summary['model']} -> {args.output}/report.md "
                             f"({summary['seconds']['total']:.0f} s)"))
    quality = summary.get("quality", {})
    if "table" in quality:
        from dgq_compiler.report.quality import terminal_rows

        print()
        print(format_table(*terminal_rows(quality), title="image quality (* = 95% interval separates from FP)"))
    print()
    cpu = summary.get("cpu_seconds", {})
    print(format_table(["stage", "wall s", "CPU s"], [[k, v, cpu.get(k, "-")] for k, v in summary["seconds"].items()],
                       title=f"time by stage (load {summary['load']['start']:.1f} -> {summary['load']['end']:.1f})"))
    failed = [r["preset"] for r in summary["configs"] if not r["verify_passed"]]
    return 1 if failed else 0
