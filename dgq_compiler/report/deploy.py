"""`dgq run`'s deployment section: configurations lowered to integer ops for onnxruntime (`dgq compile --target
onnxruntime-cpu`), each with its UNet call in a default onnxruntime session against the fp32 graph's and its own QDQ
graph's, whether its int32 accumulators equal the simulator's (`dgq verify --target onnxruntime-cpu`), and what
`dgq check --target onnxruntime-cpu` says.

`lowered_rows` measures (run.py calls it once the configurations are compiled); `deploy_section` writes the report's
markdown from the summary (report/markdown.py calls it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

TARGET = "onnxruntime-cpu"
# what the report says when run_hook leaves a real-size model out (its reason is in run_hook's docstring)
REAL_SIZE_SKIPPED = (f"Not lowered in this run: at this model's size `dgq run` does not lower its configurations for "
                     f"{TARGET} (a lowered session beside the run's pipeline is the memory its child processes "
                     f"avoid). Lower one with `dgq compile --target {TARGET}`, compare it with `dgq verify --target "
                     f"{TARGET}`; `benchmarks/deploy_lowering.py` measures SD v1.4-size graphs.")


def lowered_rows(export_dir: Path, out: Path, recipes: dict, open_predictor: Callable[[Path], Callable],
                 time_call: Callable[[Callable], float], fp32_call_s: float | None, qdq_call_s: dict,
                 verify_timesteps: list) -> list[dict]:
    """Compile each recipe ({configuration: Recipe}, configurations not adapted to a target) for onnxruntime-cpu into
    `out`/graphs/<configuration>@onnxruntime-cpu and measure it. `open_predictor(graph)`: a UNet predictor in a
    default session; `time_call(predictor)`: its median UNet call in seconds.

    The timed session and the verifier's (the graph with its accumulators as outputs) are created side by side in
    two threads: onnxruntime creates sessions without the GIL, and a channel-grouped lowered graph's takes ~20 s on
    the embedded model (23.8k nodes), which was most of this stage. Both are ready before the timing starts, so
    nothing runs beside the timed calls."""
    from concurrent.futures import ThreadPoolExecutor

    from dgq_compiler.run_config import lower
    from dgq_compiler.verify.lowering import open_lowered, verify_lowered
    from simulator.check import check_graph

    rows = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, recipe in recipes.items():
            graph, report = lower(export_dir, recipe, out, name, TARGET)
            predictor, opened = pool.submit(open_predictor, graph), pool.submit(open_lowered, graph.parent)
            predictor, opened = predictor.result(), opened.result()
            call = time_call(predictor)
            exact = verify_lowered(opened, timesteps=verify_timesteps, batch=1)
            del predictor, opened  # two sessions of this graph: freed before the next configuration's
            check = check_graph(graph, TARGET)
            rows.append({"preset": name, "graph": str(graph.relative_to(out)),
                         "products": sum(k[1] for k in report.kernels),
                         "accumulators": sum(k[2] for k in report.kernels),
                         "accumulators_exact": exact.exact, "ops_verified": len(exact.ops),
                         "violations": len(check.violations),
                         # wall clock, kept apart (identical runs write identical summaries but for "seconds")
                         "seconds": {"unet_call": call, "fp32_unet_call": fp32_call_s,
                                     "qdq_unet_call": qdq_call_s.get(name)}})
    return rows


def run_hook(shared, results) -> list[dict]:
    """`dgq run`: lower every configuration it compiled (not those adapted to a target) and measure them, from the
    recipes and times the configurations wrote. Real-size models (those whose configurations run in child
    processes by default, see run_child.py) are left out: a lowered session beside the parent's pipeline is the
    memory the children avoid; benchmarks/deploy_lowering.py measures that size. The decision is by size alone, so
    forcing child processes on a small model (DGQ_RUN_CHILD=1) writes the same summary."""
    from dgq_compiler.recipe import Recipe
    from dgq_compiler.run_config import _median_call_s
    from dgq_compiler.sampling import onnx_predictor

    if skipped(shared):
        return []
    recipes = {r.preset: Recipe.load(shared.out / r.recipe) for r in results if "@" not in r.preset}
    if not recipes:
        return []
    steps = list(next(iter(recipes.values())).timesteps)
    fp32 = next((r.seconds.get("fp32_unet_call") for r in results if r.seconds.get("fp32_unet_call")), None)
    return lowered_rows(shared.export_dir, shared.out, recipes, onnx_predictor,
                        lambda predictor: _median_call_s(predictor, shared.calls), fp32,
                        {r.preset: r.seconds.get("unet_call") for r in results}, [steps[0], steps[-1]])


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def skipped(shared) -> str | None:
    """Why run_hook lowers nothing for this run's model (None: it lowers every configuration)."""
    from dgq_compiler.run_child import real_size

    return REAL_SIZE_SKIPPED if real_size(shared.pipe.unet) else None


def deploy_section(summary: dict) -> list[str]:
    """Markdown lines of the section (a sentence when the run left its model out, none when it had nothing to
    lower)."""
    rows = summary.get("deploy") or []
    if summary.get("deploy_skipped"):
        return ["## Deployment: integer lowering for onnxruntime", "", summary["deploy_skipped"], ""]
    if not rows:
        return []
    head = ["configuration", "integer products", "int32 accumulators", "UNet call s", "vs fp32", "vs its QDQ graph",
            "accumulators = simulator", f"{TARGET} violations"]
    body = [[r["preset"], r["products"], r["accumulators"], f"{r['seconds']['unet_call']:.3f}",
             _ratio(r["seconds"]["unet_call"], r["seconds"]["fp32_unet_call"]),
             _ratio(r["seconds"]["unet_call"], r["seconds"]["qdq_unet_call"]),
             f"yes ({r['ops_verified']} ops)" if r["accumulators_exact"] else "NO", r["violations"]] for r in rows]
    from dgq_compiler.report.markdown import _table  # the report's one table format (markdown imports this module)

    return ["## Deployment: integer lowering for onnxruntime", "",
            f"Each configuration compiled with `dgq compile --target {TARGET}`: every quantized Conv/Linear as uint8 "
            "codes x int8 weights in MatMulInteger (int32 accumulators) with a float epilogue, run in a default "
            "onnxruntime session (no options). UNet call: median wall time of one call on this machine, against "
            "the fp32 graph and the configuration's QDQ graph in the same kind of session; accumulators compared "
            "with the simulator's integer kernels bit for bit (`dgq verify --target onnxruntime-cpu`). Graphs: "
            f"`graphs/<configuration>@{TARGET}/`.", "", _table(head, body), ""]
