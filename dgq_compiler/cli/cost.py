"""`dgq cost`: MACs, BOPs, sizes, roofline latency and energy per configuration on a hardware target."""
from __future__ import annotations

import argparse

EPILOG = """\
conventions:
  paper  BOPs = MACs(conv, linear, QK^T, A.V) x b_w x b_a, every op alike (the DGQ paper's Table 2);
         SDXL-architecture UNets default to 1024 px as in Table 2.
  exact  each op at its own widths: conv/linear b_w x b_a, QK^T b_a x b_a, log-coded A.V as shift-adds
         (reported apart), conv_in/conv_out and the cross-attention <start> branch at 32 x 32, plus the
         per-group rescale multiplies (channel groups assumed). On a compiled graph without --bits the
         first row, `compiled`, counts each Conv/Linear at the widths it was compiled with (per-layer mixed
         precision) and a BOS-aware text embedding's <start> row at 32 x 32 (its roofline uses W8A8).
sizes: quantized weights at b_w bits, other parameters at 32 bits; quantization parameters (per-channel
weight scales, [T, G] activation tables, group maps) reported apart. MB = 10^6 bytes.
roofline (--target, default generic-npu): per op, bytes moved (weights at b_w packed, activations at their
code width, FP outputs, this step's scale rows and group maps, the <start> branch in FP, split-K partial
sums on chip) and MACs per unit precision; latency = max(compute, DRAM, on-chip time), summed per UNet
step (one call at the batch: 2 = cond + uncond) and per image (T steps); energy = compute + data movement.
Norms, SiLU, softmax and adds between the counted ops are not counted.

examples:
  dgq cost --model sd-v1.4                      # the standard table (paper convention) on generic-npu
  dgq cost --model sdxl-turbo --bits W4A8 --convention exact --json
  dgq cost --model sd-v1.4 --target my_npu.json --steps 50
  dgq cost --model export_dir/unet.onnx --batch 1 --resolution 512
  dgq cost --measure-target -o this_machine.json   # micro-benchmark this machine into a target file"""


def register(sub) -> None:
    p = sub.add_parser(
        "cost", help="MACs, BOPs, model size, roofline latency and energy per configuration",
        description="Count the MACs of one UNet forward (conv, linear, attention QK^T and A.V) from an "
                    "architecture config (meta tensors, no weights) or an ONNX graph, and the BOPs, model size, "
                    "quantization-parameter bytes, bytes moved, roofline latency and energy on a hardware target "
                    "of a bit-width configuration (default: the standard table FP32, W8A8, W8A6, W4A8, W4A6 x "
                    "G in {8, 16}). With --measure-target: measure this machine into a target file instead.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, metavar="NAME|CONFIG.json|GRAPH.onnx",
                   help="zoo name (sd-v1.4, sd-v2.1, sdxl-base, sdxl-turbo, tiny), a diffusers UNet config.json "
                        "or folder, or an ONNX graph (fp32 export or compiled)")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="image height = width in pixels (latent = PX/8); default: the model's "
                        "(sample_size x 8; 1024 for SDXL under --convention paper; a graph's export)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="UNet batch (default 2: cond + uncond for classifier-free guidance; a graph's export)")
    p.add_argument("--bits", default=None, metavar="WxAy",
                   help="one configuration, x, y in {4, 6, 8, 16, 32} (W32A32 = FP32); default: the standard table")
    p.add_argument("--groups", type=int, default=None, metavar="G",
                   help="activation groups per quantization point (with --bits; default 8)")
    p.add_argument("--steps", type=int, default=25, metavar="T",
                   help="denoising steps: rows of the [T, G] tables, UNet calls per image")
    p.add_argument("--convention", choices=("paper", "exact"), default="paper", help="how BOPs are counted")
    p.add_argument("--shared-group-map", action="store_true",
                   help="one group map for all steps (the hardware variant) instead of one per step")
    p.add_argument("--target", default="generic-npu", metavar="PRESET|FILE",
                   help="hardware target for latency and energy: generic-npu, tensorrt-int8, onnxruntime-cpu or a "
                        "target file with a `hardware` section")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of tables (with --bits: that configuration, its `estimate` "
                        "and every op's bytes, intensity, latency and energy in `ops`; without: the MACs and a "
                        "`configurations` list of the standard rows, each with its `estimate`)")
    p.add_argument("--measure-target", action="store_true",
                   help="micro-benchmark this machine (fp32/int8 GEMM in onnxruntime, memory bandwidth) and write "
                        "a target file to -o")
    p.add_argument("-o", "--output", default=None, metavar="FILE.json",
                   help="with --measure-target: the target file to write (never a shipped preset)")
    p.add_argument("--overwrite", action="store_true", help="with --measure-target: replace an existing -o file")
    p.set_defaults(run=run)


def run(args) -> int:
    import json

    from dgq_compiler.cli.argtypes import MAX_BATCH, MAX_LATENT, MAX_STEPS
    from dgq_compiler.errors import DgqError
    from simulator.cost import STANDARD_GROUPS, cost_row, load_inventory, parse_bits, standard_rows
    from simulator.cost.roofline import estimate, op_estimates
    from simulator.targets import load_target

    if args.measure_target:
        given = [flag for flag, value in (("--model", args.model), ("--bits", args.bits), ("--groups", args.groups),
                                          ("--resolution", args.resolution), ("--batch", args.batch)) if value is not None]
        if given or args.json:
            raise DgqError(f"--measure-target measures this machine and takes only -o/--overwrite, not "
                           f"{(given or ['--json'])[0]}")
        return _measure(args)
    if args.output is not None or args.overwrite:
        raise DgqError("-o/--overwrite go with --measure-target (dgq cost prints its figures)")
    if args.model is None:
        raise DgqError("--model is required (or --measure-target -o FILE to measure this machine)")
    for flag, value, high in (("--batch", args.batch, MAX_BATCH), ("--groups", args.groups, 1 << 16),
                              ("--steps", args.steps, MAX_STEPS), ("--resolution", args.resolution, MAX_LATENT * 8)):
        if value is not None and not 1 <= value <= high:
            raise DgqError(f"{flag} must be a positive integer, at most {high}, got {value}")
    if args.groups is not None and args.bits is None:
        raise DgqError("--groups needs --bits (the standard table uses G = 8 and 16)")
    bits = parse_bits(args.bits) if args.bits is not None else None  # bad input fails before any work
    target = load_target(args.target)
    if target.hardware is None:
        raise DgqError(f"target {args.target!r} has no `hardware` section (peak rates, bandwidths, energies): "
                       "add one or pick a preset")
    batch, resolution = graph_dims(args.model, args.batch, args.resolution)
    inventory = load_inventory(args.model, batch=batch, resolution=resolution, convention=args.convention)
    widest = max((p.channels for p in inventory.points), default=0)
    if args.groups is not None and widest and args.groups > widest:  # a group needs at least one channel
        raise DgqError(f"--groups {args.groups} is more than the widest quantization point of {args.model} has "
                       f"channels ({widest}): expected at most {widest}")
    options = {"steps": args.steps, "convention": args.convention, "shared_group_map": args.shared_group_map}
    own_widths = bits is None and inventory.per_op_widths and args.convention == "exact"
    if bits is not None:
        rows = [cost_row(inventory, bits, groups=args.groups or STANDARD_GROUPS[0], **options)]
    else:
        rows = standard_rows(inventory, **options)
        if own_widths:  # a compiled graph: first its own widths, in the cost row and the roofline alike
            rows.insert(0, cost_row(inventory, "W8A8", groups=args.groups or STANDARD_GROUPS[0], compiled=True,
                                    **options))
    estimates = [estimate(inventory, r.bits, r.groups, target, args.steps, compiled=own_widths and i == 0)
                 for i, r in enumerate(rows)]
    if args.json:
        configs = [dict(r.to_json(), estimate=e.to_json()) for r, e in zip(rows, estimates)]
        target_doc = {"name": target.name, "hardware": target.hardware.to_dict()}
        if bits is not None:
            ops = op_estimates(inventory, rows[0].bits, rows[0].groups, target.hardware)
            doc = dict(configs[0], target=target_doc, ops=[op.to_json() for op in ops])
        else:
            doc = {"model": args.model, "source": inventory.source, "convention": args.convention,
                   "batch": inventory.batch, "resolution": list(inventory.resolution), "steps": args.steps,
                   "macs": inventory.macs(), "target": target_doc, "configurations": configs}
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(_tables(args, inventory, rows, estimates))
    return 0


def graph_dims(model: str, batch: int | None, resolution: int | None) -> tuple:
    """(batch, resolution px) to cost an exported or compiled graph at: the flags, else what `dgq export`
    traced (export.json beside the graph, or beside the fp32 graph that compile.json names)."""
    from pathlib import Path

    from simulator.cost.report import is_graph

    if not is_graph(model) or (batch is not None and resolution is not None):
        return batch, resolution
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    candidates = [folder / "export.json"]
    compiled = _read_json(folder / "compile.json")
    if isinstance(compiled.get("graph"), str):
        source = Path(compiled["graph"])
        for base in (Path("."), folder):
            guess = (base / source) if not source.is_absolute() else source
            candidates.append((guess if guess.is_dir() else guess.parent) / "export.json")
    for candidate in candidates:
        report = _read_json(candidate)
        if isinstance(report.get("latent_size"), int) and report["latent_size"] > 0:
            from simulator.cost.inventory import LATENT_FACTOR

            if resolution is None:
                resolution = report["latent_size"] * LATENT_FACTOR
            if batch is None and isinstance(report.get("batch"), int) and report["batch"] > 0:
                batch = report["batch"]
            break
    return batch, resolution


def _read_json(path) -> dict:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _measure(args) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import check_writable, write_text_atomic
    from simulator.targets import PRESETS, target_from_dict
    from simulator.targets import presets as shipped
    from simulator.targets.measure import measured_target

    if args.output is None:
        raise DgqError("--measure-target needs -o FILE.json: the target file to write")
    out = Path(args.output)
    if out.suffix.lower() != ".json":
        raise DgqError(f"-o {args.output!r}: a measured target is written as JSON, expected a .json path")
    if out.resolve().parent == Path(shipped.__file__).resolve().parent or out.stem in PRESETS:
        raise DgqError(f"-o {args.output!r}: will not write over or beside a shipped preset "
                       f"({', '.join(PRESETS)}); choose another name")
    check_writable(out, args.overwrite)
    started = []
    with tqdm(total=4, desc="measure-target", unit="test", leave=False) as bar:
        def progress(msg):
            bar.update(1 if started else 0)   # a message starts a test: the one before it is done
            started.append(msg)
            bar.set_postfix_str(msg)
        doc = measured_target(name=out.stem, progress=progress)
        bar.update(1)
    target_from_dict(doc, source=str(out))   # what we write must load back
    write_text_atomic(out, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    hw = doc["hardware"]
    rows = [[f"peak {k}", v / 1e9, "GMAC/s"] for k, v in hw["peak_macs_per_s"].items()]
    rows += [[f"bandwidth {k}", v / 1e9, "GB/s"] for k, v in hw["bandwidth_bytes_per_s"].items()]
    rows.append(["buffer", hw["buffer_bytes"] / 2 ** 20, "MiB"])
    print(format_table(["figure", "value", "unit"], rows, title=f"measured target written to {out}"))
    return 0


def _tables(args, inventory, rows, estimates) -> str:
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
    headers += ["DRAM MB/step", "step ms", "image s", "step J", "image J", "data-move %", "compute-bound %"]
    table = []
    for r, e in zip(rows, estimates):
        row = [r.name, "-" if r.bits == "W32A32" else r.groups, round(r.tbops, 2),
               round(r.model_size_bytes / 1e6), round(r.qparam_bytes / 1e6, 3)]
        if exact:
            row += [round(r.shift_adds / 1e9, 2), round(r.bops_parts["rescale"] / 1e12, 2)]
        row += [round(e.step_dram_bytes / 1e6, 1), e.step_latency_s * 1e3, e.image_latency_s,
                e.step_energy_j, e.image_energy_j,
                round(100 * e.step_data_j / max(e.step_energy_j, 1e-30), 1), round(100 * e.compute_bound_share, 1)]
        table.append(row)
    out.append(format_table(headers, table, title=f"convention {args.convention}, T = {rows[0].steps} steps; "
                                                  f"roofline on target {estimates[0].target} (step = one UNet "
                                                  f"call at batch {inventory.batch}, image = T steps)"))
    if len(rows) == 1:
        r, e = rows[0], estimates[0]
        parts = [[part, round(v / 1e12, 4)] for part, v in r.bops_parts.items() if v]
        parts += [["shift-add BOPs (apart)", round(r.shift_add_bops / 1e12, 4)]] if r.shift_add_bops else []
        parts += [[f"qparams: {k}", round(v / 1e6, 4)] for k, v in r.qparam_parts.items()]
        out += ["", format_table(["part", "T (BOPs) / MB (qparams)"], parts, title=f"{r.name} breakdown")]
        kinds = [[kind, v["ops"], v["macs"] / 1e9, round(v["dram_bytes"] / 1e6, 1),
                  v["macs"] / max(v["dram_bytes"], 1), v["latency_s"] * 1e3, v["compute_j"] * 1e3,
                  v["data_j"] * 1e3] for kind, v in e.by_kind.items()]
        out += ["", format_table(["op kind", "ops", "GMACs", "DRAM MB", "MAC/byte", "ms", "compute mJ", "data mJ"],
                                 kinds, title=f"{r.name} G={r.groups} per op kind, one step on {e.target}")]
        moved = [[part.replace("_", " "), round(v / 1e6, 3)] for part, v in e.step_bytes.items()]
        out += ["", format_table(["bytes moved per step", "MB"], moved,
                                 title="bytes by part (DRAM; partial sums and fused logits: on chip)")]
    return "\n".join(out)
