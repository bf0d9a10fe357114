"""MACs of SD v1.4 counted from its architecture config vs from its exported fp32 ONNX graph.

Exports the sd-v1.4 architecture with random weights (~50 s, ~8.5 GB peak, plus onnxruntime validation)
into a temporary folder, then counts both ways at batch 2, 512 px and prints the figures per kind.
Run:  python benchmarks/cost_config_vs_graph_sd14.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="export into DIR (reused if it already holds unet.onnx)")
    args = parser.parse_args()

    from simulator.cost import load_inventory

    with tempfile.TemporaryDirectory(prefix="dgq-cost-sd14-") as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "sd-v1.4"
        if not (out / "unet.onnx").is_file():
            from dgq_compiler.export import export_unet
            from models.loader import get_unet

            start = time.perf_counter()
            export_unet(get_unet("sd-v1.4", seed=0), out, model_name="sd-v1.4", batch=2)
            print(f"export (random weights, incl. validation): {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        config = load_inventory("sd-v1.4", batch=2, resolution=512)
        t_config = time.perf_counter() - start
        start = time.perf_counter()
        graph = load_inventory(str(out / "unet.onnx"), batch=2, resolution=512)
        t_graph = time.perf_counter() - start
    a, b = config.macs(), graph.macs()
    print(f"{'kind':8} {'config MACs':>16} {'graph MACs':>16}  equal")
    for kind in a:
        print(f"{kind:8} {a[kind]:16,d} {b[kind]:16,d}  {a[kind] == b[kind]}")
    same_ops = sorted((o.module, o.kind, o.macs, o.cross, o.keys) for o in config.ops) == \
        sorted((o.module, o.kind, o.macs, o.cross, o.keys) for o in graph.ops)
    print(f"per-op (module, kind, MACs, cross, keys) identical: {same_ops}  "
          f"({len(config.ops)} vs {len(graph.ops)} ops)")
    print(f"quantized weights: {config.quantized_weight_elements:,d} vs {graph.quantized_weight_elements:,d}; "
          f"FP params: {config.fp_param_elements:,d} vs {graph.fp_param_elements:,d}")
    print(f"count time: config {t_config:.2f} s, graph {t_graph:.2f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    return 0 if a == b and same_ops else 1


if __name__ == "__main__":
    sys.exit(main())
