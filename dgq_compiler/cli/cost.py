"""`dgq cost`: MACs, BOPs, model size and quantization-parameter memory, from a config (no weights) or a graph."""
from __future__ import annotations

import argparse

EPILOG = """\
conventions:
  paper  BOPs = MACs(conv, linear, QK^T, A.V) x b_w x b_a, every op alike (the DGQ paper's Table 2);
         SDXL-architecture UNets default to 1024 px as in Table 2.
  exact  each op at its own widths: conv/linear b_w x b_a, QK^T b_a x b_a, log-coded A.V as shift-adds
         (reported apart), conv_in/conv_out and the cross-attention <start> branch at 32 x 32, plus the
         per-group rescale multiplies (channel groups assumed).
sizes: quantized weights at b_w bits, other parameters at 32 bits; quantization parameters (per-channel
weight scales, [T, G] activation tables, group maps) reported apart. MB = 10^6 bytes.

examples:
  dgq cost --model sd-v1.4                      # the standard table (paper convention)
  dgq cost --model sdxl-turbo --bits W4A8 --convention exact --json
  dgq cost --model path/to/unet/config.json --resolution 768
  dgq cost --model export_dir/unet.onnx --batch 1 --resolution 512"""


def register(sub) -> None:
    p = sub.add_parser(
        "cost", help="MACs, BOPs, model size and quantization-parameter memory per configuration",
        description="Count the MACs of one UNet forward (conv, linear, attention QK^T and A.V) from an "
                    "architecture config (meta tensors, no weights) or an ONNX graph, and the BOPs, model size "
                    "and quantization-parameter bytes of a bit-width configuration (default: the standard table "
                    "FP32, W8A8, W8A6, W4A8, W4A6 x G in {8, 16}).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="NAME|CONFIG.json|GRAPH.onnx",
                   help="zoo name (sd-v1.4, sd-v2.1, sdxl-base, sdxl-turbo, tiny), a diffusers UNet config.json "
                        "or folder, or an ONNX graph (fp32 export or compiled)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="image height = width in pixels (latent = PX/8); default: the model's "
                        "(sample_size x 8; 1024 for SDXL under --convention paper; a graph's own dims)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="UNet batch (default 2: cond + uncond for classifier-free guidance; a graph's own)")
    p.add_argument("--bits", default=None, metavar="WxAy",
                   help="one configuration, x, y in {4, 6, 8, 16, 32} (W32A32 = FP32); default: the standard table")
    p.add_argument("--groups", type=int, default=None, metavar="G",
                   help="activation groups per quantization point (with --bits; default 8)")
    p.add_argument("--steps", type=int, default=25, metavar="T",
                   help="denoising steps: rows of the [T, G] tables")
    p.add_argument("--convention", choices=("paper", "exact"), default="paper", help="how BOPs are counted")
    p.add_argument("--shared-group-map", action="store_true",
                   help="one group map for all steps (the hardware variant) instead of one per step")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of tables (with --bits: that configuration; "
                        "without: the MACs and a `configurations` list of the standard rows)")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from dgq_compiler.cli.argtypes import MAX_BATCH, MAX_LATENT, MAX_STEPS
    from dgq_compiler.errors import DgqError
    from simulator.cost import STANDARD_GROUPS, cost_row, load_inventory, parse_bits, standard_rows

    for flag, value, high in (("--batch", args.batch, MAX_BATCH), ("--groups", args.groups, 1 << 16),
                              ("--steps", args.steps, MAX_STEPS), ("--resolution", args.resolution, MAX_LATENT * 8)):
        if value is not None and not 1 <= value <= high:
            raise DgqError(f"{flag} must be a positive integer, at most {high}, got {value}")
    if args.groups is not None and args.bits is None:
        raise DgqError("--groups needs --bits (the standard table uses G = 8 and 16)")
    bits = parse_bits(args.bits) if args.bits is not None else None  # bad widths fail before any work
    resolution = args.resolution if args.resolution is not None else _compiled_resolution(args.model)
    inventory = load_inventory(args.model, batch=args.batch, resolution=resolution, convention=args.convention)
    widest = max((p.channels for p in inventory.points), default=0)
    if args.groups is not None and widest and args.groups > widest:  # a group needs at least one channel
        raise DgqError(f"--groups {args.groups} is more than the widest quantization point of {args.model} has "
                       f"channels ({widest}): expected at most {widest}")
    options = {"steps": args.steps, "convention": args.convention, "shared_group_map": args.shared_group_map}
    if bits is not None:
        rows = [cost_row(inventory, bits, groups=args.groups or STANDARD_GROUPS[0], **options)]
    else:
        rows = standard_rows(inventory, **options)
    if args.json:
        if bits is not None:
            doc = rows[0].to_json()
        else:
            doc = {"model": args.model, "source": inventory.source, "convention": args.convention,
                   "batch": inventory.batch, "resolution": list(inventory.resolution), "steps": args.steps,
                   "macs": inventory.macs(), "configurations": [r.to_json() for r in rows]}
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(_tables(args, inventory, rows))
    return 0


def _compiled_resolution(model: str) -> int | None:
    """A compiled graph's calibrated resolution in px, from the compile.json `dgq compile` wrote beside it."""
    import json
    from pathlib import Path

    path = Path(model)
    report = (path if path.is_dir() else path.parent) / "compile.json"
    try:
        latent = json.loads(report.read_text(encoding="utf-8")).get("latent_size")
    except (OSError, ValueError, AttributeError):
        return None
    return latent * 8 if isinstance(latent, int) and latent > 0 else None


def _tables(args, inventory, rows) -> str:
    from dgq_compiler.cli.table import format_table

    h, w = inventory.resolution
    title = (f"dgq cost: {args.model} ({inventory.source}), batch {inventory.batch}, {h}x{w} px "
             f"(latent {inventory.latent[0]}x{inventory.latent[1]}), one UNet forward")
    macs = inventory.macs()
    mac_rows = [[kind, macs[kind] / 1e9, f"{100 * macs[kind] / max(macs['total'], 1):.1f}%"]
                for kind in ("conv", "linear", "attn_qk", "attn_av", "other") if kind != "other" or macs[kind]]
    mac_rows.append(["total", macs["total"] / 1e9, "100.0%"])
    out = [format_table(["MACs", "GMACs", "share"], mac_rows, title=title), ""]
    exact = args.convention == "exact"
    headers = ["config", "G", "TBOPs", "model size MB", "qparams MB"]
    if exact:
        headers += ["shift-adds G", "rescale TBOPs"]
    table = []
    for r in rows:
        row = [r.name, "-" if r.bits == "W32A32" else r.groups, round(r.tbops, 2),
               round(r.model_size_bytes / 1e6), round(r.qparam_bytes / 1e6, 3)]
        if exact:
            row += [round(r.shift_adds / 1e9, 2), round(r.bops_parts["rescale"] / 1e12, 2)]
        table.append(row)
    out.append(format_table(headers, table, title=f"convention {args.convention}, T = {rows[0].steps} steps"))
    if len(rows) == 1:
        r = rows[0]
        parts = [[part, round(v / 1e12, 4)] for part, v in r.bops_parts.items() if v]
        parts += [["shift-add BOPs (apart)", round(r.shift_add_bops / 1e12, 4)]] if r.shift_add_bops else []
        parts += [[f"qparams: {k}", round(v / 1e6, 4)] for k, v in r.qparam_parts.items()]
        out += ["", format_table(["part", "T (BOPs) / MB (qparams)"], parts, title=f"{r.name} breakdown")]
    return "\n".join(out)
