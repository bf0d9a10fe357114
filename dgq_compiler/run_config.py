"""One configuration of `dgq run`: quantize (-> adapt to a target) -> compile -> verify / check -> images,
fidelity and cost, on what the earlier stages made once (`Shared`)."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERIFY_TARGET = "generic-npu"
CHECK_TARGET = "tensorrt-int8"


@dataclass
class ConfigResult:
    preset: str
    recipe: str
    graph: str
    compiled_bytes: int
    point_check: dict
    verify_passed: bool
    verify: dict
    check_violations: dict
    cost: dict
    step_snr: list = field(default_factory=list)
    guidance_snr: list = field(default_factory=list)  # (timestep, dB) of the guidance direction, per call
    layer_sqnr: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    onnxruntime: dict = field(default_factory=dict)  # ran in a default session (call times: in seconds)


@dataclass
class Shared:
    """What every configuration's stage reads: made once by the earlier stages, kept in memory."""
    pipe: object
    export_dir: Path
    out: Path
    options: object             # run.RunOptions
    calls: list                 # every UNet call of the FP reference sampling (analysis.UNetCall)
    probe_calls: list           # three of them, for per-layer SQNR
    layers: list                # Conv/Linear module names
    fp_layers: dict             # their FP outputs on the probe calls
    image_prompts: list
    seeds: list
    images: dict                # label -> uint8 images; each configuration adds its own
    inventory: object           # the fp32 graph's cost inventory (the same for every configuration)
    recipes: dict = field(default_factory=dict)   # preset -> Recipe
    fp32_step_s: float | None = None              # median UNet call of the fp32 graph, default onnxruntime session
    # drop the torch UNet's weights once a configuration's torch stages ran (a child process, which runs one
    # configuration and exits): its onnxruntime stage then never holds two copies of the model (SD at 512 px)
    release_unet: bool = False
    log: object = None          # where a configuration's sub-stages are announced (None: nowhere)


@dataclass
class Built:
    name: str            # the preset, `<preset>@<target>` when adapted to a target
    recipe: object
    recipe_path: Path
    report: object       # compile.CompileReport
    graph: Path


def quantize_and_compile(name: str, config, stats, pipe, export_dir: Path, out: Path, timer,
                         target: str | None = None, options=None) -> Built:
    """quantize (-> adapt to `target`) -> compile into out/recipes/<name>.json and out/graphs/<name>/, timed
    under "quantize" and "compile"."""
    from dgq_compiler.adapt import adapt_recipe, kxk_conv_modules
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.mixdq.compose import recipe_for_run

    with timer.stage("quantize", "quantize"):
        recipe = recipe_for_run(name, config, stats, pipe, out, options)  # DGQ / MixDQ / EDA-DM, composed
        if target is not None:
            recipe, _gave_up = adapt_recipe(recipe, target, kxk_conv_modules(export_dir / "unet.onnx"))
            name = f"{name}@{target}"
        (out / "recipes").mkdir(exist_ok=True)
        recipe_path = recipe.save(out / "recipes" / f"{name}.json")

    with timer.stage("compile", "compile"):
        (out / "graphs").mkdir(exist_ok=True)
        graph_dir = out / "graphs" / name
        report = compile_graph(export_dir, recipe, graph_dir,
                               CompileOptions(paths_relative_to=str(out), target=target), progress=lambda *_: None)
    return Built(name, recipe, recipe_path, report, graph_dir / "unet.onnx")


def lower(export_dir: Path, recipe, out: Path, name: str, target: str = "onnxruntime-cpu"):
    """Compile `recipe` (not adapted: the same quantization) into integer ops for `target` in
    out/graphs/<name>@<target>/; returns (the graph, the compile report). Without compile's own onnxruntime run
    (validate=False): the caller verifies the lowered graph's accumulators next, which runs it, and a session of a
    channel-grouped lowered graph takes seconds to create."""
    from dgq_compiler.compile import CompileOptions, compile_graph

    graph_dir = out / "graphs" / f"{name}@{target}"
    (out / "graphs").mkdir(exist_ok=True)
    report = compile_graph(export_dir, recipe, graph_dir,
                           CompileOptions(paths_relative_to=str(out), target=target, validate=False),
                           progress=lambda *_: None)
    return graph_dir / "unet.onnx", report


def one_config(name: str, config, stats, shared: Shared, target: str | None = None) -> ConfigResult:
    """quantize (-> adapt to `target`) -> compile -> verify / check -> images and fidelity -> cost, for one
    configuration; with a target the row is `<preset>@<target>` and the check covers its static graphs."""
    from dgq_compiler.adapt import graphs_for_target
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.mixdq.compose import compiled_cost_row
    from dgq_compiler.report import analysis
    from dgq_compiler.sampling import decode, onnx_predictor, sample
    from dgq_compiler.verify import verify_graph
    from dgq_compiler.timing import StageTimer
    from simulator.check import check_graph
    from simulator.cost.report import cost_row

    out, options, pipe = shared.out, shared.options, shared.pipe
    timer = StageTimer(shared.log, digits=2)
    built = quantize_and_compile(name, config, stats, pipe, shared.export_dir, out, timer, target, options)
    name, recipe, recipe_path, report, graph = built.name, built.recipe, built.recipe_path, built.report, built.graph
    graph_dir = graph.parent
    shared.recipes[name] = recipe

    with timer.stage("verify_check", f"verify on the {VERIFY_TARGET} simulator, check {CHECK_TARGET} rules"):
        verify = verify_graph(graph, target=VERIFY_TARGET, seed=options.seed,
                              latent_size=min(stats.resolution[0], options.verify_latent_size or stats.resolution[0]),
                              timesteps=_spread(stats.timesteps, options.verify_timesteps))
        verify.graph = str(graph.relative_to(out))
        (graph_dir / "verify.json").write_text(verify.to_json() + "\n")
        checked = graphs_for_target(graph_dir, CHECK_TARGET, lambda p: Path(p) / "unet.onnx")
        violations = [v for g in checked for v in check_graph(g, CHECK_TARGET).violations]
        (graph_dir / "check.json").write_text(json.dumps(
            {"target": CHECK_TARGET, "graphs": [g.name for g in checked],
             "violations": [asdict(v) for v in violations]}, indent=1, sort_keys=True) + "\n")

    # torch first: a child process can then drop the torch UNet before onnxruntime (Shared.release_unet)
    with timer.stage("layer_sqnr", "per-layer SQNR (torch fake-quant)"):
        with apply_recipe(pipe.unet, recipe):
            layer_sqnr = analysis.per_layer_sqnr(pipe.unet, shared.probe_calls, shared.layers, shared.fp_layers)
        if shared.release_unet:
            release_weights(pipe.unet)

    with timer.stage("images_and_fidelity", "noise SNR, call time and images (default onnxruntime session)"):
        if shared.fp32_step_s is None:  # timed first: the fp32 and compiled sessions are never open at once
            shared.fp32_step_s = _median_call_s(onnx_predictor(shared.export_dir / "unet.onnx"), shared.calls)
        predictor = onnx_predictor(graph)  # a default session: what a client opens
        step_s = _median_call_s(predictor, shared.calls)
        step_snr, guidance_snr = [], []
        for c in shared.calls:  # one prediction at a time: a real-size run records many calls
            eps = predictor(c.sample, c.timestep, c.states)
            step_snr.append((c.timestep, analysis.snr_db(c.eps, eps)))
            guidance_snr.append((c.timestep, analysis.guidance_snr_db(c.eps, eps)))
        latents = sample(pipe, predictor, shared.image_prompts, shared.seeds, options.steps, options.guidance,
                         latent_size=options.latent_size)
        shared.images[name] = decode(pipe, latents)
        del predictor  # its weights and arena go now, not when the cost row below is done
    seconds = timer.seconds

    weight_bits, act_bits = compiled_bits(recipe, config)
    row = (target is None and compiled_cost_row(graph, config, shared.inventory, len(stats.timesteps))) or cost_row(
        shared.inventory, f"W{weight_bits}A{act_bits}",
        groups=config.groups if target is None else 1, steps=len(stats.timesteps), convention="exact",
        shared_group_map=config.shared_group_map and target is None)
    worst_mismatch = max((t.mismatch_rate for t in verify.tensors), default=0.0)
    return ConfigResult(
        preset=name, recipe=str(recipe_path.relative_to(out)), graph=str(graph.relative_to(out)),
        compiled_bytes=report.compiled_bytes, point_check=report.point_check,
        verify_passed=verify.passed,
        verify={"tensors": len(verify.tensors), "worst_mismatch_rate": worst_mismatch,
                "max_lsb": max((t.max_lsb for t in verify.tensors), default=0),
                "overflows": sum(o.overflows for o in verify.overflows),
                "output_error": max(verify.output_error.values(), default=0.0), "failures": verify.failures},
        check_violations=dict(Counter(v.rule for v in violations)),
        cost={"tbops_exact": row.tbops, "model_size_bytes": row.model_size_bytes, "qparam_bytes": row.qparam_bytes},
        step_snr=[(float(t), float(s)) for t, s in step_snr],
        guidance_snr=[(float(t), float(s)) for t, s in guidance_snr],
        layer_sqnr={k: float(v) for k, v in layer_sqnr.items()},
        seconds={**seconds, "unet_call": step_s, "fp32_unet_call": shared.fp32_step_s},  # wall clock: kept apart
        onnxruntime={"default_session": True})


def indented(log):
    """`log` for a configuration's sub-stages, announced under the run's numbered stage line."""
    return lambda message: log(f"    {message} ...")


def release_weights(unet) -> None:
    """Drop the parameters' storage (buffers stay) and give the freed heap back to the machine."""
    import torch

    for param in unet.parameters():
        param.data = torch.empty(0, dtype=param.dtype)
    _give_back_freed_heap()


def _give_back_freed_heap() -> None:
    """glibc keeps freed small blocks (most conv weights are a few MB) in its heap: return them to the machine."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def compiled_bits(recipe, config) -> tuple[int, int]:
    """(weight, activation) widths the recipe compiles to (a target adaptation may widen the config's)."""
    bits = {role == "weight": tq.bits for (_m, role), tq in recipe.tensors.items()}
    return bits.get(True, config.weight_bits), bits.get(False, config.act_bits)


def _median_call_s(predictor, calls, count: int = 3) -> float:
    """Median wall time of one UNet call over the first `count` reference calls (after one warm-up call)."""
    import statistics

    first = calls[0]
    predictor(first.sample, first.timestep, first.states)
    times = []
    for c in calls[:count]:
        start = time.perf_counter()
        predictor(c.sample, c.timestep, c.states)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _spread(timesteps, count: int) -> list[float]:
    """`count` calibrated timesteps spread over the schedule (first, middle, last, ...)."""
    import numpy as np

    idx = sorted({int(round(i)) for i in np.linspace(0, len(timesteps) - 1, max(1, count))})
    return [float(timesteps[i]) for i in idx]
