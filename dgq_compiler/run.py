"""`dgq run`: the whole job on one model, into one output folder a user can keep.

export -> calibrate -> quantize (DGQ and baselines) -> compile -> verify (generic NPU) / check
(TensorRT-like) -> cost -> analysis -> report.md + figures. The folder appears only when every stage
finished (built under a temporary name, then renamed).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dgq_compiler.errors import DgqError
from dgq_compiler.io import atomic_path, check_writable
from dgq_compiler.quality.stage import DEFAULT_IMAGES, QualityOptions
from dgq_compiler.run_child import config_runner
from dgq_compiler.run_config import CHECK_TARGET, Shared, indented

DGQ_PRESETS = ("dgq-w8a8-g8", "dgq-w4a8-g8", "dgq-w8a6-g16", "dgq-w4a6-g16")
BASELINE_PRESETS = ("qdiffusion-w8a8", "tfmq-w8a8", "qdiffusion-w4a6", "tfmq-w4a6")
DEFAULT_PRESETS = DGQ_PRESETS + BASELINE_PRESETS
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
    # quality stage, per configuration: one count per prompt set (held-out, rephrased) or one for both; 0: no stage
    images: int | tuple[int, ...] = DEFAULT_IMAGES
    steps: int = 25
    scheduler: str = "pndm"            # sampler of calibration and images (calibrate.run.SCHEDULERS)
    guidance: float | None = None      # None: the model's (default_guidance)
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
        if self.images != 0:  # QualityOptions validates and normalizes the counts (one per set, or one for all)
            object.__setattr__(self, "images", QualityOptions(images=self.images).images)
        from dgq_compiler.calibrate.run import SCHEDULERS

        if self.scheduler not in SCHEDULERS:
            raise DgqError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.steps < 2:
            raise DgqError(f"--steps must be at least 2, got {self.steps}")
        if self.guidance is None:
            object.__setattr__(self, "guidance", default_guidance(resolve_model(self.model)[0]))
        if not self.guidance > 1.0 or self.guidance == float("inf"):  # NaN fails the comparison too
            raise DgqError(f"--guidance must be a finite number > 1 (classifier-free guidance), got {self.guidance}")
        if self.latent_size is not None and (self.latent_size < 8 or self.latent_size % 8):
            raise DgqError(f"--latent-size must be a positive multiple of 8, got {self.latent_size}")


# `--quick`: few prompts, steps, images and configurations, so a real-size model can be tried on a laptop
QUICK = {"num_prompts": 2, "steps": 4, "num_images": 1, "verify_timesteps": 1, "verify_latent_size": 32,
         "presets": ("dgq-w8a8-g8",), "images": 8}
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


def resolve_model(model: str) -> tuple[str, str]:
    """(pipeline source for `open_pipeline`, a label): 'embedded' is the shipped trained model."""
    if model == "embedded":
        from models.trained import trained_pipeline_dir

        return str(trained_pipeline_dir()), EMBEDDED_LABEL
    if model == "tiny":
        return "tiny", "tiny (embedded, random weights)"
    return model, model


def speaks_shapes(source: str) -> bool:
    """Is this pipeline a shapes model (the shipped one or one trained by models.train_shapes)? Told by its
    tokenizer: the shapes vocabulary, byte for byte. Such a model gets the shapes prompts and guidance."""
    from models.trained import trained_pipeline_dir

    vocab, shapes = (Path(folder) / "tokenizer" / "vocab.json" for folder in (source, trained_pipeline_dir()))
    try:
        return vocab.is_file() and vocab.read_bytes() == shapes.read_bytes()
    except OSError:
        return False


def default_guidance(source: str) -> float:
    """The classifier-free guidance a model is sampled with when none is given: a shapes model's own
    (models.trained.SHAPES_GUIDANCE), Stable Diffusion's 7.5 for every other. `source` as from resolve_model."""
    if speaks_shapes(source):
        from models.trained import SHAPES_GUIDANCE

        return SHAPES_GUIDANCE
    from dgq_compiler.calibrate.run import DEFAULT_GUIDANCE

    return DEFAULT_GUIDANCE


def default_prompt_files(source: str) -> tuple[str | None, str | None]:
    """(calibration, image) prompt files: a shapes model speaks only its shapes vocabulary."""
    if not speaks_shapes(source):
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
    from dgq_compiler.timing import JobClock

    clock = JobClock()
    with atomic_path(output, directory=True) as out:
        summary = _run_into(options, source, label, out, log)
        summary["shortened"] = quick
        clock.stamp(summary)
        from dgq_compiler.report.markdown import write_report

        write_report(summary, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=_json) + "\n")
    return summary


def _json(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_stage(timer, name: str):
    """A stage of the run, announced with its number and timed under its name."""
    return timer.stage(name, f"{name} ...")


def open_model(options: RunOptions, source: str, label: str):
    """(pipeline on the CPU with the run's scheduler, options with the model's default prompt files filled in)."""
    from dgq_compiler.calibrate.run import open_pipeline, use_scheduler

    calibration_file, image_file = default_prompt_files(source)
    options = replace(options, prompts=options.prompts or calibration_file,
                      image_prompts=options.image_prompts or image_file)
    pipe = open_pipeline(source, seed=options.seed, device="cpu")  # the ONNX stages and references run on CPU
    use_scheduler(pipe, options.scheduler)
    return pipe, options


def export_and_calibrate(timer, pipe, options: RunOptions, source: str, label: str, out: Path):
    """The first two stages of `dgq run` (and of `dgq ablate`): out/export/ and out/calibration/stats.json.
    Returns (export report, statistics, calibration prompts)."""
    import torch

    from dgq_compiler.calibrate.run import calibrate, read_prompts
    from dgq_compiler.export import export_unet

    with run_stage(timer, "export the fp32 UNet to ONNX"):
        export = export_unet(pipe.unet, out / "export", model_name=label, seed=options.seed,
                             progress=lambda _m: None)

    with run_stage(timer, "calibrate (FP sampling, streaming statistics)"):
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
                          model_seed=options.seed if source == "tiny" else None, progress=True,
                          scheduler=options.scheduler)
        pipe.to(torch.device("cpu"))
        (out / "calibration").mkdir()
        stats.save(out / "calibration" / "stats.json")
    return export, stats, prompts


def _run_into(options: RunOptions, source: str, label: str, out: Path, log) -> dict:
    import numpy as np

    from dgq_compiler.config import preset
    from dgq_compiler.report import analysis, figures
    from dgq_compiler.sampling import decode, sample, torch_predictor
    from dgq_compiler.timing import StageTimer
    from simulator.cost.macs_from_graph import inventory_from_graph

    timer = StageTimer(log, digits=1, numbered=True)
    seconds = timer.seconds
    figures_dir = out / "figures"
    figures_dir.mkdir()
    pipe, options = open_model(options, source, label)
    unet = pipe.unet
    export, stats, prompts = export_and_calibrate(timer, pipe, options, source, label, out)

    with run_stage(timer, "FP reference images and UNet calls"):
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
                                                 resolution=stats.resolution[0] * 8, model="export/unet.onnx"),
                    log=indented(log))
    results = []  # run_config.ConfigResult per configuration
    with config_runner(shared, source, stats) as run_config:  # real-size models: one child process each
        for name in options.presets:
            with run_stage(timer, f"{name}: quantize, compile, verify, check"):
                results.append(run_config(name, preset(name), stats, shared))
        dgq = next((name for name in options.presets if name.startswith("dgq")), None)
        if dgq is not None:  # what a per-tensor INT8 compiler costs: the first DGQ preset compiled for it
            with run_stage(timer, f"{dgq} for {CHECK_TARGET}: adapt, compile, verify, check"):
                results.append(run_config(dgq, preset(dgq), stats, shared, target=CHECK_TARGET))
    with run_stage(timer, "lowered for onnxruntime-cpu: compile, time, verify, check"):
        from dgq_compiler.report.deploy import run_hook, skipped

        deploy = run_hook(shared, results)
        deploy_skipped = skipped(shared)

    if options.images:
        with run_stage(timer, "quality: FP and every configuration on two prompt sets"):
            from dgq_compiler.quality.table2 import quality_for_run

            quality = quality_for_run(shared, results, stats, figures_dir, deploy)
    else:
        quality = {"skipped": "--images 0"}

    with run_stage(timer, "cost model"):
        from dgq_compiler.mixdq.compose import compiled_inventory
        from dgq_compiler.report.roofline import preset_configs, roofline_summary

        cost = _cost_tables(shared.inventory, options)
        per_op = {r.preset: compiled_inventory(out / r.graph, preset(r.preset), shared.inventory)
                  for r in results if r.preset in options.presets}  # not the `@target` rows
        roofline = roofline_summary(shared.inventory, preset_configs(options.presets), figures_dir / "roofline.png",
                                    steps=options.steps, per_op={k: v for k, v in per_op.items() if v is not None})

    with run_stage(timer, "figures"):
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
            "attention": attention, "seconds": seconds, "cpu_seconds": timer.cpu_seconds, "deploy": deploy,
            "deploy_skipped": deploy_skipped, "quality": quality,
            "fp_image_mean": float(np.mean(images["FP32"]))}


def _cost_tables(inventory, options: RunOptions) -> dict:
    from simulator.cost.report import load_inventory, standard_rows

    inventories = {"this model (from its ONNX graph)": inventory}
    inventories.update({f"{model} (from its config)": load_inventory(model) for model in COST_MODELS})
    return {title: [asdict(r) for r in standard_rows(inv, steps=options.steps)] for title, inv in inventories.items()}
