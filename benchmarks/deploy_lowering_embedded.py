"""Benchmark: integer-lowered graphs (`--target onnxruntime-cpu`) of the embedded model against their QDQ graphs,
in default onnxruntime sessions: node and integer-product counts, session start-up (wall and CPU seconds), one UNet
call at batch 128 (the quality stage's batch) and at batch 2, and whether `dgq verify` stays exact.

    python benchmarks/deploy_lowering_embedded.py --run-dir DIR [--configs dgq-w8a8-g8 ...] [--workdir W] [--runs 3]

DIR is a `dgq run` output folder (export/ and recipes/<preset>.json); each recipe is compiled from that export
twice (QDQ, and lowered) into --workdir, each graph is timed in its own child process (a fresh session, as `dgq run`
creates them), and the machine load (1-minute average) is printed next to every row: on a shared 2-core machine,
compare ratios measured in one run, and CPU seconds rather than wall seconds. Targets (issue 15): start-up < 5 s,
a batch-128 call not slower than the QDQ graph, accumulators exact.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = ("dgq-w8a8-g8", "dgq-w4a6-g16", "qdiffusion-w4a6")
BATCHES = (128, 2)
LATENT = 16


def time_graph(path: str, runs: int) -> dict:
    """In this (child) process: default-session start-up, then the median call time per batch."""
    import onnx

    from dgq_compiler import runtime

    header = onnx.load(path, load_external_data=False)
    wall, cpu = time.perf_counter(), time.process_time()
    session = runtime.session(path, "default")
    out = {"startup_s": time.perf_counter() - wall, "startup_cpu_s": time.process_time() - cpu}
    for batch in BATCHES:
        feed = runtime.example_feeds(header, LATENT, batch=batch, timestep=500.0)
        session.run(None, feed)
        times = sorted(runtime.timed_runs(session, feed, runs))
        out[f"call_b{batch}_s"] = times[len(times) // 2]
    return out


def child(path: Path, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--runs", str(runs)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"timing {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(run_dir: Path, work: Path, preset: str, target: str | None) -> Path:
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.recipe import Recipe

    out = work / (f"{preset}@{target}" if target else preset)
    if not (out / "unet.onnx").is_file():
        recipe = Recipe.load(run_dir / "recipes" / f"{preset}.json")
        compile_graph(run_dir / "export", recipe, out, CompileOptions(target=target, validate=False),
                      progress=lambda *_: None)
    return out


def counts(graph: Path) -> tuple[int, int]:
    import onnx

    nodes = onnx.load(str(graph / "unet.onnx"), load_external_data=False).graph.node
    return len(nodes), sum(n.op_type == "MatMulInteger" for n in nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a `dgq run` output folder (export/, recipes/)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dgq-deploy-embedded"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-verify", action="store_true", help="skip `dgq verify` of the lowered graphs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_graph(args.child, args.runs)))
        return
    if args.run_dir is None or not (args.run_dir / "export").is_dir():
        raise SystemExit("--run-dir: expected a `dgq run` output folder with export/ and recipes/")
    from dgq_compiler.recipe import Recipe
    from dgq_compiler.verify.lowering import verify_lowered

    args.workdir.mkdir(parents=True, exist_ok=True)
    head = ["graph", "nodes", "MatMulInteger", "start-up s", "start-up CPU s", "b128 call s", "b128 vs QDQ",
            "b2 call s", "b2 vs QDQ", "verify", "load"]
    rows = []
    for preset in args.configs:
        qdq = build(args.run_dir, args.workdir, preset, None)
        low = build(args.run_dir, args.workdir, preset, "onnxruntime-cpu")
        t_qdq, t_low = child(qdq / "unet.onnx", args.runs), child(low / "unet.onnx", args.runs)
        exact = ""
        if not args.no_verify:
            steps = list(Recipe.load(args.run_dir / "recipes" / f"{preset}.json").timesteps)
            exact = "exact" if verify_lowered(low, timesteps=[steps[0], steps[-1]], batch=1).exact else "NOT EXACT"
        load = f"{os.getloadavg()[0]:.1f}"
        for name, graph, t, ratio in ((preset, qdq, t_qdq, False), (f"{preset}@onnxruntime-cpu", low, t_low, True)):
            nodes, products = counts(graph)
            rows.append([name, nodes, products, f"{t['startup_s']:.2f}", f"{t['startup_cpu_s']:.2f}",
                         f"{t['call_b128_s']:.3f}", f"{t['call_b128_s'] / t_qdq['call_b128_s']:.2f}x" if ratio else "",
                         f"{t['call_b2_s']:.3f}", f"{t['call_b2_s'] / t_qdq['call_b2_s']:.2f}x" if ratio else "",
                         exact if ratio else "", load])
            print("  ".join(str(c) for c in rows[-1]), flush=True)
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print()
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
