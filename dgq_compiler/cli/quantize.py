"""`dgq quantize`: calibration statistics + a preset/config -> a recipe (DGQ or a baseline)."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "quantize", help="turn calibration statistics into a recipe (DGQ groups or a baseline)",
        description="Choose, per quantization point, the grouping dimension (channel or pixel) and K-means groups "
                    "per timestep, attention quantizers and per-output-channel weight quantizers; write the recipe "
                    "RECIPE.json (manifest) + RECIPE.safetensors.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("stats", nargs="?", help="statistics manifest from `dgq calibrate` / `dgq merge-stats`")
    p.add_argument("-o", "--output", help="recipe manifest to write (.json; arrays beside it)")
    p.add_argument("--preset", default="dgq-w8a8-g8",
                   help="a preset name (dgq-wXaY-gG[-shared], qdiffusion-wXaY, tfmq-wXaY) or a config JSON file")
    p.add_argument("--model", default=None,
                   help="where the weights are: 'embedded', 'tiny' or a diffusers pipeline/UNet folder; None: the "
                        "model the statistics name (the one they were calibrated on)")
    p.add_argument("--allocation", default=None, metavar="FILE.json",
                   help="per-layer widths from `dgq allocate` (required by mixed-precision presets such as mixdq-w5a8)")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def run(args) -> int:
    import time

    from dgq_compiler.calibrate.run import open_unet
    from dgq_compiler.calibrate.stats import CalibrationStats
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.config import PRESET_NAMES, resolve_config
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import output_manifest
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.run import resolve_model

    if args.list_presets:
        print("\n".join(PRESET_NAMES))
        return 0
    if not args.stats or not args.output:
        raise DgqError("give a statistics file and -o RECIPE.json (or --list-presets)")
    out = output_manifest(args.output, args.overwrite)
    config = resolve_config(args.preset)
    stats = CalibrationStats.load(args.stats)
    widths = None
    if args.allocation is not None:
        from dgq_compiler.mixdq.allocate import Allocation
        from dgq_compiler.mixdq.compose import check_allocation

        allocation = Allocation.load(args.allocation)
        check_allocation(allocation, stats, config)
        widths = allocation.widths()
    model = args.model or stats.model_name
    unet = open_unet(resolve_model(model)[0], stats.sampling.get("model_seed") or 0)
    start = time.perf_counter()
    recipe, summary = quantize_stats(stats, config, unet, progress=True, widths=widths)
    seconds = time.perf_counter() - start
    recipe.save(out, overwrite=args.overwrite)

    groups: dict = {}
    for _m, role, axis, g, _v, _x in summary.rows:
        if role != "attn_probs":
            groups.setdefault(axis, []).append(g)
    rows = [["recipe", f"{out} (+ {out.with_suffix('.safetensors').name})"],
            ["config", f"{config.name}: W{config.weight_bits} ({config.weight_method}) A{config.act_bits}, "
                       f"attention {config.attn_quantizer} {config.attention_bits}-bit"
                       f"{' dynamic' if config.attn_quantizer == 'log2' and config.log_dynamic else ''}"
                       f"{', <start> FP' if config.exclude_bos else ''}"],
            ["timesteps (T)", f"{recipe.T}{'' if config.per_step else ' (one scale set for all)'}"],
            ["weights", f"{sum(1 for k in recipe.tensors if k[1] == 'weight')} layers, per output channel"]]
    for axis, counts in sorted(groups.items()):
        sizes = sorted(set(counts))
        rows.append([f"activations by {axis}", f"{len(counts)} points, G = {', '.join(map(str, sizes))}"
                     + ("  (shared map)" if config.shared_group_map and axis != "tensor" else "")])
    attn = [x for x in summary.rows if x[1] == "attn_probs"]
    rows.append(["attention probs", f"{len(attn)} ({attn[0][2] if attn else '-'})"])
    if widths is not None:
        counts: dict = {}
        for (_m, role), tq in recipe.tensors.items():
            if role in ("weight", "input"):
                key = f"{'W' if role == 'weight' else 'A'}{tq.bits}"
                counts[key] = counts.get(key, 0) + 1
        rows.append(["per-layer widths", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))])
    rows.append(["time", f"{seconds:.1f} s"])
    print(format_table(["quantize", model], rows))
    return 0
