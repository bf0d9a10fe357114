"""`dgq allocate`: MixDQ bit allocation by integer programming from a sensitivity table."""
from __future__ import annotations

from dgq_compiler.cli import argtypes

FRONT_BITS = (4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0)
FRONT_RANDOM_SEEDS = 5


def register(sub) -> None:
    p = sub.add_parser(
        "allocate", help="per-layer weight/activation widths by integer programming (MixDQ) from `dgq sensitivity`",
        description="Choose per layer weights of 4 or 8 bits and inputs of 6 or 8 bits minimising the total "
                    "normalised sensitivity under budgets: average weight bits per parameter (model size), average "
                    "input bits per MAC, average weight x input bits per MAC (BOPs). scipy's milp (HiGHS). With --fp "
                    "(or a -fp preset) a layer may also stay in full precision: zero sensitivity, 32 bits in every "
                    "budget. The allocation file feeds `dgq quantize --allocation`.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("table", help="sensitivity table from `dgq sensitivity`")
    p.add_argument("-o", "--output", required=True, help="allocation to write (.json)")
    p.add_argument("--preset", default=None,
                   help="take the budgets from a mixed-precision preset (e.g. mixdq-w5a8, dgq-mixdq-w5a7-g8)")
    p.add_argument("--weight-bits", type=float, default=None, help="average weight bits per parameter, 4..8")
    p.add_argument("--act-bits", type=float, default=None, help="average input-activation bits per MAC, 6..8")
    p.add_argument("--bops-per-mac", type=float, default=None, help="average weight x input bits per MAC, 24..64")
    p.add_argument("--fp", action="store_true",
                   help="allow full-precision layers (weights and input unquantized, counted at 32 bits); a -fp "
                        "preset implies it")
    p.add_argument("--random", type=int, default=None, metavar="SEED",
                   help="write a random allocation no larger than the ILP's instead (the baseline)")
    p.add_argument("--front", default=None, metavar="PNG",
                   help="also plot total sensitivity against average weight bits for the ILP and random allocations")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from dgq_compiler.cli.table import format_table
    from dgq_compiler.config import MIXED_WEIGHT_CHOICES, resolve_config
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable
    from dgq_compiler.mixdq.allocate import Budget, allocate, random_allocation
    from dgq_compiler.mixdq.sensitivity import SensitivityTable

    given = (args.weight_bits, args.act_bits, args.bops_per_mac)
    if args.preset is not None and any(v is not None for v in given):
        raise DgqError("give --preset or explicit budgets (--weight-bits/--act-bits/--bops-per-mac), not both")
    if args.preset is not None and args.fp:
        raise DgqError("--fp goes with explicit budgets; with --preset choose a -fp preset (e.g. mixdq-w5a8-fp)")
    fixed = MIXED_WEIGHT_CHOICES[-1]
    if args.preset is not None:
        config = resolve_config(args.preset)
        if not config.mixed:
            raise DgqError(f"preset {config.name} has one width for every layer: expected a mixed-precision preset "
                           "(mixdq-w5a8, dgq-mixdq-w5a8-g8, ...)")
        budget, fixed = Budget.of_config(config), config.weight_bits
    elif all(v is None for v in given):
        raise DgqError("no budget: give --preset or at least one of --weight-bits, --act-bits, --bops-per-mac")
    else:
        budget = Budget(*given, fp=args.fp)
    if Path(args.output).suffix != ".json":
        raise DgqError(f"--output must end in .json, got {args.output!r}")
    check_writable(args.output, args.overwrite)
    if args.front:
        check_writable(args.front, args.overwrite)
    table = SensitivityTable.load(args.table)
    best = allocate(table, budget, fixed_weight=fixed)
    chosen = best if args.random is None else random_allocation(table, best, seed=args.random)
    chosen.save(args.output, overwrite=args.overwrite)
    if args.front:
        from dgq_compiler.mixdq.figures import front_figure

        points: dict = {"ILP": [], "random (same size or smaller)": []}
        for bits in FRONT_BITS:
            ilp = allocate(table, Budget(weight_bits=bits, fp=budget.fp))
            points["ILP"].append((ilp.achieved["weight_bits"], ilp.objective))
            for seed in range(FRONT_RANDOM_SEEDS):
                rand = random_allocation(table, ilp, seed=seed)
                points["random (same size or smaller)"].append((rand.achieved["weight_bits"], rand.objective))
        front_figure(points, args.front, "total normalised sensitivity (lower is better)",
                     "Size vs predicted quality: ILP allocation and random allocations", log=True)
    counts: dict = {}
    for w, a in chosen.layers.values():
        counts[f"W{w}A{a}"] = counts.get(f"W{w}A{a}", 0) + 1
    a = chosen.achieved
    print(format_table(["allocate", chosen.method], [
        ["allocation", f"{args.output}{' + ' + args.front if args.front else ''}"],
        ["budget", ", ".join(f"{k} <= {v:g}" for k, v in budget.limits().items())
         + (", FP layers allowed" if budget.fp else "")],
        ["reached", f"weights {a['weight_bits']:.3f} bits/param, inputs {a['act_bits']:.3f} bits/MAC, "
                    f"{a['bops_per_mac']:.2f} w x a bits/MAC"],
        ["layers", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))],
        ["total sensitivity", f"{chosen.objective:.4g}" + ("" if chosen is best else f" (ILP: {best.objective:.4g})")]]))
    return 0
