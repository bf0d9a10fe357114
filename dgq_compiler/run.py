"""`dgq run`: the whole job on one model, into one output folder a user can keep.

export -> calibrate -> quantize (DGQ and baselines) -> compile -> verify (generic NPU) / check
(TensorRT-like) -> cost -> analysis -> report.md + figures. The folder appears only when every stage
finished (built under a temporary name, then renamed).
"""
from __future__ import annotations

import json
from collections import Counter
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable

DGQ_PRESETS = ("dgq-w8a8-g8", "dgq-w4a8-g8", "dgq-w8a6-g16", "dgq-w4a6-g16")
BASELINE_PRESETS = ("qdiffusion-w8a8", "tfmq-w8a8", "qdiffusion-w4a6", "tfmq-w4a6")
DEFAULT_PRESETS = DGQ_PRESETS + BASELINE_PRESETS
VERIFY_TARGET = "generic-npu"
CHECK_TARGET = "tensorrt-int8"
COST_MODELS = ("sd-v1.4", "sdxl-base")
EMBEDDED_LABEL = "shapes-sd (embedded, trained)"


@dataclass(frozen=True)
class RunOptions:
    model: str = "embedded"            # embedded | tiny | a local diffusers pipeline folder
    presets: tuple[str, ...] = DEFAULT_PRESETS
    prompts: str | None = None         # calibration prompt file (default: the shipped 64 captions)
    num_prompts: int | None = None     # use the first N calibration prompts
    image_prompts: str | None = None   # prompts of the image grid (default: the first held-out ones)
    num_images: int = 4
    steps: int = 25
    guidance: float = 7.5
    seed: int = 0
    verify_timesteps: int = 3
    verify_latent_size: int | None = None  # simulator vs onnxruntime latent (default: the calibrated one)
    latent_size: int | None = None     # calibration and image latents (default: the UNet's sample_size)
    device: str | None = None          # torch device of calibration (default: cuda when present, else cpu)
    quick: bool = False                # a try-out budget: QUICK replaces the options left at their defaults

    def __post_init__(self):
        from dgq_compiler.config import preset

        if not self.presets:
            raise DgqError("no configurations to run: give at least one preset")
        for name in self.presets:
            preset(name)  # a clear error for an unknown name, before any work
        if self.num_prompts is not None and self.num_prompts < 1:
            raise DgqError(f"--num-prompts must be at least 1, got {self.num_prompts}")
        if not 1 <= self.num_images <= 16:
            raise DgqError(f"--num-images must be in 1..16, got {self.num_images}")
        if self.steps < 2:
            raise DgqError(f"--steps must be at least 2, got {self.steps}")
        if not self.guidance > 1.0 or self.guidance == float("inf"):  # NaN fails the comparison too
            raise DgqError(f"--guidance must be a finite number > 1 (classifier-free guidance), got {self.guidance}")
        if self.latent_size is not None and (self.latent_size < 8 or self.latent_size % 8):
            raise DgqError(f"--latent-size must be a positive multiple of 8, got {self.latent_size}")


# `--quick`: few prompts, steps, images and configurations, so a real-size model can be tried on a laptop
QUICK = {"num_prompts": 2, "steps": 4, "num_images": 1, "verify_timesteps": 1, "verify_latent_size": 32,
         "presets": ("dgq-w8a8-g8",)}
FULL_LABELS = {"num_prompts": "all", "verify_latent_size": "the calibrated latent"}


def shortened(options: RunOptions) -> tuple[RunOptions, dict]:
    """With `quick`, the options with QUICK in place of every default; and {option: {full, quick}} for the report."""
    if not options.quick:
        return options, {}
    defaults = RunOptions()
    changes = {name: value for name, value in QUICK.items() if getattr(options, name) == getattr(defaults, name)}
    report = {name: {"full": FULL_LABELS.get(name, getattr(defaults, name)), "quick": value}
              for name, value in changes.items()}
    return replace(options, **changes), report


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
    layer_sqnr: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    onnxruntime: dict = field(default_factory=dict)  # ran in a default session (call times: in seconds)


def resolve_model(model: str) -> tuple[str, str]:
    """(pipeline source for `open_pipeline`, a label): 'embedded' is the shipped trained model."""
    if model == "embedded":
        from models.trained import trained_pipeline_dir

        return str(trained_pipeline_dir()), EMBEDDED_LABEL
    if model == "tiny":
        return "tiny", "tiny (embedded, random weights)"
    return model, model


def default_prompt_files(label: str) -> tuple[str | None, str | None]:
    """(calibration, image) prompt files: the trained model speaks only its shapes vocabulary."""
    if label != EMBEDDED_LABEL:
        return None, None
    from models.trained import shapes_prompts_file

    return str(shapes_prompts_file("shapes_calibration.txt")), str(shapes_prompts_file("shapes_heldout.txt"))


def _image_prompts(options: RunOptions) -> list[str]:
    from importlib import resources

    from dgq_compiler.calibrate.run import read_prompts

    if options.image_prompts:
        prompts = read_prompts(options.image_prompts)
    else:
        text = resources.files("models.prompts").joinpath("heldout.txt").read_text(encoding="utf-8")
        prompts = [p.strip() for p in text.splitlines() if p.strip()]
    return prompts[: options.num_images]


def run(options: RunOptions, output: str | Path, overwrite: bool = False, log=print) -> dict:
    """Run every stage into `output`; returns the summary that is also written as summary.json. Paths in the
    folder's JSON reports are relative to the folder, so it can be moved as a whole."""
    output = check_writable(output, overwrite=overwrite, kind="folder")
    options, quick = shortened(options)
    source, label = resolve_model(options.model)
    started = time.perf_counter()
    with atomic_path(output, directory=True) as out:
        summary = _run_into(options, source, label, out, log)
        summary["shortened"] = quick
        summary["seconds"]["total"] = round(time.perf_counter() - started, 1)
        from dgq_compiler.report.markdown import write_report

        write_report(summary, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=_json) + "\n")
    return summary


def _json(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@dataclass
class Shared:
    """What every configuration's stage reads: made once by the earlier stages, kept in memory."""
    pipe: object
    export_dir: Path
    out: Path
    options: RunOptions
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


def _stage(timer, name: str):
    """A stage of the run, announced with its number and timed under its name."""
    return timer.stage(name, f"{name} ...")


def _run_into(options: RunOptions, source: str, label: str, out: Path, log) -> dict:
    import numpy as np
    import torch

    from dgq_compiler.calibrate.run import calibrate, open_pipeline, read_prompts, use_pndm
    from dgq_compiler.config import preset
    from dgq_compiler.export import export_unet
    from dgq_compiler.report import analysis, figures
    from dgq_compiler.sampling import decode, sample, torch_predictor

    from dgq_compiler.timing import StageTimer
    from simulator.cost.macs_from_graph import inventory_from_graph

    timer = StageTimer(log, digits=1, numbered=True)
    seconds = timer.seconds
    calibration_file, image_file = default_prompt_files(label)
    options = replace(options, prompts=options.prompts or calibration_file,
                      image_prompts=options.image_prompts or image_file)
    figures_dir = out / "figures"
    figures_dir.mkdir()
    pipe = open_pipeline(source, seed=options.seed, device="cpu")  # the ONNX stages and references run on CPU
    use_pndm(pipe)
    unet = pipe.unet

    with _stage(timer, "export the fp32 UNet to ONNX"):
        export = export_unet(unet, out / "export", model_name=label, seed=options.seed, progress=lambda _m: None)

    with _stage(timer, "calibrate (FP sampling, streaming statistics)"):
        prompts = read_prompts(options.prompts)
        if options.num_prompts:
            prompts = prompts[: options.num_prompts]
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            pipe.to(torch.device(device))
        except (RuntimeError, AssertionError) as exc:
            raise DgqError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from None
        stats = calibrate(pipe, prompts, model_name=options.model, steps=options.steps, guidance=options.guidance,
                          seed=options.seed, latent_size=options.latent_size,
                          model_seed=options.seed if source == "tiny" else None, progress=True)
        pipe.to(torch.device("cpu"))
        (out / "calibration").mkdir()
        stats.save(out / "calibration" / "stats.json")

    with _stage(timer, "FP reference images and UNet calls"):
        image_prompts = _image_prompts(options)
        seeds = [options.seed + i for i in range(len(image_prompts))]
        calls: list[analysis.UNetCall] = []
        fp_latents = sample(pipe, torch_predictor(unet), image_prompts, seeds, options.steps, options.guidance,
                            latent_size=options.latent_size, on_step=lambda i, t, x, s, e: calls.append(analysis.UNetCall(i, t, x, s, e)))
        images = {"FP32": decode(pipe, fp_latents)}
        # every layer's output is held for each probe call (GBs at 512 px): --quick probes the middle call only
        probe = [len(calls) // 2] if options.quick else [0, len(calls) // 2, len(calls) - 1]
        probe_calls = [calls[i] for i in sorted(set(probe))]
        layers = [name for name, m in unet.named_modules()
                  if type(m).__name__ in ("Conv2d", "Linear", "LoRACompatibleConv", "LoRACompatibleLinear")]
        fp_layers = analysis.layer_outputs(unet, probe_calls, layers)

    shared = Shared(pipe, out / "export", out, options, calls, probe_calls, layers, fp_layers, image_prompts, seeds,
                    images, inventory_from_graph(out / "export" / "unet.onnx", batch=export.batch,
                                                 resolution=stats.resolution[0] * 8, model="export/unet.onnx"))
    results: list[ConfigResult] = []
    for name in options.presets:
        with _stage(timer, f"{name}: quantize, compile, verify, check"):
            results.append(_one_config(name, preset(name), stats, shared))
    dgq = next((name for name in options.presets if name.startswith("dgq")), None)
    if dgq is not None:  # what a per-tensor INT8 compiler costs: the first DGQ preset compiled for it
        with _stage(timer, f"{dgq} for {CHECK_TARGET}: adapt, compile, verify, check"):
            results.append(_one_config(dgq, preset(dgq), stats, shared, target=CHECK_TARGET))

    with _stage(timer, "cost model"):
        from dgq_compiler.report.roofline import preset_configs, roofline_summary

        cost = _cost_tables(shared.inventory, options)
        roofline = roofline_summary(shared.inventory, preset_configs(options.presets), figures_dir / "roofline.png",
                                    steps=options.steps)

    with _stage(timer, "figures"):
        figs = {}
        figs["image_grid"] = figures.image_grid(images, image_prompts, figures_dir / "image_grid.png").name
        figs["layer_sqnr"] = figures.layer_sqnr({r.preset: r.layer_sqnr for r in results},
                                                figures_dir / "layer_sqnr.png",
                                                "Per-layer output SQNR against FP (torch fake-quant of each recipe)").name
        figs["step_snr"] = figures.step_snr({r.preset: r.step_snr for r in results}, figures_dir / "step_snr.png").name
        dgq = next((r.preset for r in results if r.preset.startswith("dgq")), None)
        figs["ranges"] = figures.range_figures(stats, shared.recipes.get(dgq), dgq, figures_dir)
        bos, rest = analysis.cross_attention_probs(unet, calls[len(calls) // 2])
        attention = {}
        if bos.size:
            figs["attention"] = figures.attention_histogram(
                bos, rest, figures_dir / "attention_log_probs.png",
                f"Cross-attention probabilities at t={calls[len(calls) // 2].timestep:.0f} (all cross-attention layers)").name
            attention = {"bos_mean": float(bos.mean()), "other_mean": float(rest.mean()),
                         "bos_share_of_mass": float(bos.sum() / (bos.sum() + rest.sum()))}

    return {"model": label, "source": source, "options": asdict(options), "export": asdict(export),
            "calibration": {"prompts": len(prompts), "timesteps": list(stats.timesteps),
                            "points": len(stats.points)},
            "image_prompts": image_prompts, "seeds": seeds,
            "configs": [asdict(r) for r in results], "cost": cost, "roofline": roofline, "figures": figs,
            "attention": attention, "seconds": seconds,
            "fp_image_mean": float(np.mean(images["FP32"]))}


def _one_config(name: str, config, stats, shared: Shared, target: str | None = None) -> ConfigResult:
    """quantize (-> adapt to `target`) -> compile -> verify / check -> images and fidelity -> cost, for one
    configuration; with a target the row is `<preset>@<target>` and the check covers its static graphs."""
    from dgq_compiler.adapt import adapt_recipe, graphs_for_target, kxk_conv_modules
    from dgq_compiler.compile import CompileOptions, compile_graph
    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.report import analysis
    from dgq_compiler.sampling import decode, onnx_predictor, sample
    from dgq_compiler.verify import verify_graph
    from dgq_compiler.timing import StageTimer
    from simulator.check import check_graph
    from simulator.cost.report import cost_row

    out, options, pipe = shared.out, shared.options, shared.pipe
    timer = StageTimer(digits=2)
    with timer.stage("quantize"):
        recipe, _summary = quantize_stats(stats, config, pipe.unet)
        if target is not None:
            recipe, _gave_up = adapt_recipe(recipe, target, kxk_conv_modules(shared.export_dir / "unet.onnx"))
            name = f"{name}@{target}"
        (out / "recipes").mkdir(exist_ok=True)
        recipe_path = recipe.save(out / "recipes" / f"{name}.json")
        shared.recipes[name] = recipe

    with timer.stage("compile"):
        (out / "graphs").mkdir(exist_ok=True)
        graph_dir = out / "graphs" / name
        report = compile_graph(shared.export_dir, recipe, graph_dir,
                               CompileOptions(paths_relative_to=str(out), target=target), progress=lambda *_: None)
        graph = graph_dir / "unet.onnx"

    with timer.stage("verify_check"):
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

    with timer.stage("images_and_fidelity"):
        predictor = onnx_predictor(graph)  # a default session: what a client opens
        if shared.fp32_step_s is None:
            shared.fp32_step_s = _median_call_s(onnx_predictor(shared.export_dir / "unet.onnx"), shared.calls)
        step_s = _median_call_s(predictor, shared.calls)
        step_snr = [(c.timestep, analysis.snr_db(c.eps, predictor(c.sample, c.timestep, c.states)))
                    for c in shared.calls]
        latents = sample(pipe, predictor, shared.image_prompts, shared.seeds, options.steps, options.guidance,
                         latent_size=options.latent_size)
        shared.images[name] = decode(pipe, latents)
        with apply_recipe(pipe.unet, recipe):
            quantized_layers = analysis.layer_outputs(pipe.unet, shared.probe_calls, shared.layers)
        layer_sqnr = analysis.per_layer_sqnr(shared.fp_layers, quantized_layers, shared.layers)
    seconds = timer.seconds

    bits = {role == "weight": tq.bits for (_m, role), tq in recipe.tensors.items()}  # the compiled widths
    row = cost_row(shared.inventory, f"W{bits.get(True, config.weight_bits)}A{bits.get(False, config.act_bits)}",
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
        layer_sqnr={k: float(v) for k, v in layer_sqnr.items()},
        seconds={**seconds, "unet_call": step_s, "fp32_unet_call": shared.fp32_step_s},  # wall clock: kept apart
        onnxruntime={"default_session": True})


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


def _cost_tables(inventory, options: RunOptions) -> dict:
    from simulator.cost.report import load_inventory, standard_rows

    inventories = {"this model (from its ONNX graph)": inventory}
    inventories.update({f"{model} (from its config)": load_inventory(model) for model in COST_MODELS})
    return {title: [asdict(r) for r in standard_rows(inv, steps=options.steps)] for title, inv in inventories.items()}
