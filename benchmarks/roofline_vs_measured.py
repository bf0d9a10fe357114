"""Roofline prediction vs measured onnxruntime step time on this machine (issue 18's check against reality).

1. Measures this machine into a target (`dgq cost --measure-target`'s micro-benchmark: onnxruntime fp32 /
   int8 GEMM, numpy memory bandwidth), or reads one given with --target.
2. For each graph: times one UNet step (batch 2 = cond + uncond) in a default onnxruntime session (median
   of --runs after a warm-up), predicts it with the cost model on that target, and prints the error.
   One profiled run splits the measured time by op type, beside the prediction per op kind, so the table
   says where the error comes from (the roofline counts Conv/Gemm/MatMul only).
Graphs: the embedded trained model (exported here, fp32) and the SD v1.4 architecture at 256 px (exported
here unless --sd14-export names an existing export: ~5 min and ~8-15 GB, run under the heavy lock).
--graph PATH (repeatable) measures any other graph, e.g. an integer-lowered one, predicted at --bits/--groups:

    nice flock /tmp/dgq-heavy.lock python benchmarks/roofline_vs_measured.py > roofline.txt
    python benchmarks/roofline_vs_measured.py --skip-sd14 --skip-embedded --graph lowered/unet.onnx \
        --graph-model sd-v1.4 --bits W8A8 --groups 8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRACED = ("Conv", "Gemm", "MatMul")   # also their fused forms (FusedConv, FusedMatMul, ...)


def measure_step(graph: Path, latent: int, runs: int, profile_dir: Path) -> tuple:
    """(median seconds of one step at batch 2, {op type: profiled seconds}) in default sessions."""
    import onnx

    from dgq_compiler import runtime

    header = onnx.load(str(graph), load_external_data=False)
    feed = runtime.example_feeds(header, latent, batch=2, seed=0, timestep=500.0)
    session = runtime.session(graph, "default")   # as a real client creates it
    session.run(None, feed)   # warm-up
    times = runtime.timed_runs(session, feed, runs)
    del session
    session = runtime.session(graph, "default", profile_prefix=profile_dir / graph.parent.name)
    session.run(None, feed)
    session.run(None, feed)
    by_type, runs_seen = runtime.kernel_time_by_op(session.end_profiling())
    return statistics.median(times), {k: v * 1e-6 / max(runs_seen, 1) for k, v in by_type.items()}


def predict(graph: Path, latent: int, bits: str, groups: int, target, model: str | None) -> object:
    """From the graph's own Conv/Gemm/MatMul nodes, or (`model`: a zoo name or UNet config, for graphs whose
    products are integer ops the graph counter does not read, e.g. the lowered ones) from the architecture."""
    from simulator.cost import load_inventory
    from simulator.cost.macs_from_graph import inventory_from_graph
    from simulator.cost.roofline import estimate

    inventory = (load_inventory(model, batch=2, resolution=latent * 8) if model
                 else inventory_from_graph(graph, batch=2, resolution=latent * 8))
    return estimate(inventory, bits, groups, target, steps=25)


def export(name_or_path: str, out: Path, latent: int | None) -> Path:
    from dgq_compiler.export import export_unet
    from models.loader import get_unet

    export_unet(get_unet(name_or_path), out, model_name=str(name_or_path), latent_size=latent,
                progress=lambda _m: None)
    return out / "unet.onnx"


def report(label: str, graph: Path, latent: int, bits: str, groups: int, target, runs: int, tmp: Path,
           model: str | None = None) -> dict:
    measured, by_type = measure_step(graph, latent, runs, tmp)
    e = predict(graph, latent, bits, groups, target, model)
    error = (e.step_latency_s - measured) / measured
    print(f"\n== {label}: {graph} ({bits}{'' if bits == 'W32A32' else f' G{groups}'}, batch 2, "
          f"{latent * 8} px, latent {latent})")
    print(f"measured step {measured:.3f} s (median of {runs}) | predicted {e.step_latency_s:.3f} s | "
          f"error {100 * error:+.1f} % | predicted compute-bound share {100 * e.compute_bound_share:.0f} %")
    traced = sum(v for k, v in by_type.items() if any(t in k for t in TRACED))
    total = sum(by_type.values())
    print(f"profiled run: {total:.3f} s in kernels; Conv/Gemm/MatMul {traced:.3f} s "
          f"({100 * traced / max(total, 1e-9):.0f} %), everything else (not counted) {total - traced:.3f} s")
    for op, seconds in sorted(by_type.items(), key=lambda kv: -kv[1])[:10]:
        print(f"   measured {op:<24} {seconds:8.3f} s")
    for kind, v in sorted(e.by_kind.items(), key=lambda kv: -kv[1]["latency_s"]):
        print(f"   predicted {kind:<23} {v['latency_s']:8.3f} s  ({v['macs'] / 1e9:.1f} GMAC, "
              f"{v['dram_bytes'] / 1e6:.0f} MB DRAM)")
    conv_measured = sum(v for k, v in by_type.items() if "Conv" in k)
    conv_predicted = sum(v["latency_s"] for k, v in e.by_kind.items() if "conv" in k.lower())
    mm_measured = sum(v for k, v in by_type.items() if "MatMul" in k or "Gemm" in k)
    mm_predicted = sum(v["latency_s"] for k, v in e.by_kind.items() if "conv" not in k.lower())
    conv_macs = sum(v["macs"] for k, v in e.by_kind.items() if "conv" in k.lower())
    mm_macs = sum(v["macs"] for k, v in e.by_kind.items() if "conv" not in k.lower())
    print(f"   Conv: predicted {conv_predicted:.3f} s vs profiled {conv_measured:.3f} s "
          f"({conv_macs / max(conv_measured, 1e-9) / 1e9:.1f} GMAC/s attained); MatMul/Gemm: predicted "
          f"{mm_predicted:.3f} s vs profiled {mm_measured:.3f} s ({mm_macs / max(mm_measured, 1e-9) / 1e9:.1f} "
          f"GMAC/s attained); peak fp32 in the target {target.hardware.peak_macs_per_s.fp32 / 1e9:.1f} GMAC/s")
    return {"label": label, "measured_s": measured, "predicted_s": e.step_latency_s, "error": error}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None, help="a target file; default: measure this machine now")
    parser.add_argument("--sd14-export", default=None, metavar="DIR",
                        help="an existing `dgq export sd-v1.4 --latent-size 32` folder (else exported here)")
    parser.add_argument("--skip-sd14", action="store_true", help="only the embedded model and --graph")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--graph", action="append", default=[], metavar="PATH",
                        help="also measure this graph (e.g. an integer-lowered one), predicted at --bits/--groups")
    parser.add_argument("--latent", type=int, default=32, help="latent size for --graph (default 32 = 256 px)")
    parser.add_argument("--bits", default="W32A32", help="configuration --graph is predicted at")
    parser.add_argument("--groups", type=int, default=1, help="activation groups --graph is predicted at")
    parser.add_argument("--graph-model", default=None, metavar="NAME|CONFIG",
                        help="predict --graph from this architecture (e.g. sd-v1.4) instead of the graph's own "
                             "Conv/Gemm/MatMul nodes: needed for lowered graphs (ConvInteger, MatMulInteger, ...)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per graph (after one warm-up)")
    args = parser.parse_args()

    from simulator.targets import load_target, target_from_dict
    from simulator.targets.measure import measured_target

    if args.target:
        target = load_target(args.target)
    else:
        start = time.perf_counter()
        target = target_from_dict(measured_target(name="measured-here"), source="measured")
        hw = target.hardware
        print(f"measured target ({time.perf_counter() - start:.0f} s): fp32 {hw.peak_macs_per_s.fp32 / 1e9:.1f} "
              f"GMAC/s, int8 {hw.peak_macs_per_s.int8 / 1e9:.1f} GMAC/s, DRAM {hw.bandwidth_bytes_per_s.dram / 1e9:.1f}"
              f" GB/s, on-chip {hw.bandwidth_bytes_per_s.on_chip / 1e9:.1f} GB/s, buffer "
              f"{hw.buffer_bytes >> 20} MiB")
        print(json.dumps(hw.to_dict(), sort_keys=True))
    rows = []
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp:
        tmp = Path(tmp)
        if not args.skip_embedded:
            from models.trained import trained_pipeline_dir

            graph = export(str(trained_pipeline_dir()), tmp / "embedded", None)
            latent = json.loads((graph.parent / "export.json").read_text())["latent_size"]
            rows.append(report("embedded model (fp32)", graph, latent, "W32A32", 1, target, max(args.runs, 10), tmp))
        if not args.skip_sd14:
            graph = (Path(args.sd14_export) / "unet.onnx" if args.sd14_export
                     else export("sd-v1.4", tmp / "sd14", 32))
            rows.append(report("SD v1.4 architecture (fp32)", graph, 32, "W32A32", 1, target, args.runs, tmp))
        for path in args.graph:
            graph = Path(path) / "unet.onnx" if Path(path).is_dir() else Path(path)
            rows.append(report(f"given graph {graph.parent.name}", graph, args.latent, args.bits, args.groups, target, args.runs, tmp,
                               args.graph_model))
    print("\nsummary: predicted vs measured step time (batch 2)")
    for r in rows:
        print(f"  {r['label']:<30} measured {r['measured_s']:.3f} s  predicted {r['predicted_s']:.3f} s  "
              f"error {100 * r['error']:+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
