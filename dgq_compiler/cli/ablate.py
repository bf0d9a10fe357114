"""`dgq ablate`: the paper's Table 3 (grouping, attention components) on one model, with a report."""
from __future__ import annotations

import argparse

from dgq_compiler.cli import argtypes


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "ablate", help="ablation suite: group count x dimension selection, attention components (Table 3)",
        description="Export and calibrate once, then quantize, compile and score (images from the compiled graph "
                    "in onnxruntime, shapes evaluator: Fréchet distance, alignment, IS-like, 95% intervals) every "
                    "configuration of the paper's Table 3: G = 1/2/4/8/16 with the grouping dimension forced to "
                    "channels, to pixels, or chosen by the metric; linear vs log2 attention, <start> separated or "
                    "not, dynamic vs static log2 scale; at each activation width. Writes report.md with both "
                    "tables and plots, summary.json, figures/, recipes/ and graphs/ into one folder.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("-o", "--output", default="dgq-ablations", help="output folder to create")
    p.add_argument("--model", default="embedded",
                   help="'embedded' (the shipped model), 'tiny' (random weights) or a local diffusers pipeline folder "
                        "making 32x32 images (the shapes evaluator's size)")
    p.add_argument("--act-bits", type=_widths, default="8,6", help="activation widths, comma-separated")
    p.add_argument("--weight-bits", type=argtypes.int_range(4, 8), default=8, help="weight width (4 or 8)")
    p.add_argument("--groups", type=_widths, default="1,2,4,8,16", help="group counts of the grouping table")
    p.add_argument("--attention-groups", type=int, default=8, help="G of the attention table's activations")
    p.add_argument("--tables", default="grouping,attention", help="tables to build (grouping, attention)")
    p.add_argument("--sets", default="heldout,rephrased", help="prompt sets scored (heldout, rephrased)")
    p.add_argument("--images", type=argtypes.image_counts(2, 4096), default=32,
                   help="images per configuration on each prompt set of --sets (one number: every set; H,R: "
                        "one per set, e.g. 32,64 as dgq run)")
    p.add_argument("--prompts", help="calibration prompt file (default: the model's shipped calibration captions)", default=argparse.SUPPRESS)
    p.add_argument("--num-prompts", type=argtypes.count, help="use only the first N calibration prompts")
    p.add_argument("--steps", type=argtypes.steps, default=25, help="PNDM sampling steps (calibration and images)")
    p.add_argument("--guidance", type=argtypes.cfg_guidance, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed of calibration and image sampling")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.ablate import AblateOptions, ablate
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable
    from dgq_compiler.run import RunOptions

    check_writable(args.output, args.overwrite, kind="folder")
    if args.weight_bits not in (4, 8):
        raise DgqError(f"--weight-bits must be 4 or 8, got {args.weight_bits}")
    run_options = RunOptions(model=args.model, prompts=getattr(args, "prompts", None),  # SUPPRESS: no "None" in --help
                             num_prompts=args.num_prompts, steps=args.steps, guidance=args.guidance, seed=args.seed,
                             images=args.images)
    options = AblateOptions(run=run_options, weight_bits=args.weight_bits, act_bits=args.act_bits,
                            groups=args.groups, attention_groups=args.attention_groups,
                            sets=tuple(s.strip() for s in args.sets.split(",") if s.strip()),
                            tables=tuple(t.strip() for t in args.tables.split(",") if t.strip()))
    from dgq_compiler.quality.stage import QualityOptions

    QualityOptions(images=args.images, sets=options.sets)  # an unknown set name fails now, not after calibration
    summary = ablate(options, args.output, overwrite=args.overwrite)
    first = list(summary["quality"]["sets"])[0]
    rows = [[r["table"], r["name"], *[f"{r['scores'][first][m]['value']:.{d}f}" for m, d in (("frechet", 0),
                                                                                          ("alignment", 3))]]
            for r in summary["rows"]]
    print()
    print(format_table(["table", "configuration", f"Fréchet {first}", f"alignment {first}"], rows,
                       title=f"dgq ablate: {summary['model']} -> {args.output}/report.md "
                             f"({summary['seconds']['total']:.0f} s)"))
    return 0
