"""The quality rows of a run: FP and every configuration scored on both prompt sets, in the paper's Table 2
layout (method, bits W/A, G, Fréchet and alignment per set, TBOPs in the paper's convention, model size)."""
from __future__ import annotations

from pathlib import Path

METHOD_NAMES = {"dgq": "DGQ", "qdiffusion": "Q-Diffusion", "tfmq": "TFMQ", "mixdq": "MixDQ"}
FP_LABEL = "FP32"


def describe(label: str, config, recipe, inventory, steps: int) -> dict:
    """method, bits, G, paper-convention TBOPs and model size of one row (`config` None: FP32; `recipe`: the
    compiled recipe, whose widths a target adaptation may have changed)."""
    from dgq_compiler.run_config import compiled_bits
    from simulator.cost.report import cost_row

    if config is None:
        row = cost_row(inventory, "W32A32", groups=1, steps=steps, convention="paper")
        return {"label": label, "method": "FP", "bits": "32/32", "groups": None,
                "tbops_paper": row.tbops, "model_size_bytes": row.model_size_bytes}
    target = label.partition("@")[2]
    groups = 1 if target else config.groups  # a target adaptation makes activations per tensor
    method = METHOD_NAMES.get(config.method, config.method) + (" + MixDQ" if config.method == "dgq" and
                                                               config.mixed else "")
    method += (" + EDA-DM" if config.reconstruct else "") + (f" @{target}" if target else "")
    described = {"label": label, "method": method, "groups": groups if config.method == "dgq" and not target else None}
    if config.mixed:  # per-layer widths: the paper convention's one b_w x b_a does not apply
        widths = f"{config.mixed_weight_bits or config.weight_bits:g}/{config.mixed_act_bits or config.act_bits:g}"
        return {**described, "bits": widths + " (mean)", "tbops_paper": float("nan"), "model_size_bytes": 0}
    weight_bits, act_bits = compiled_bits(recipe, config)
    row = cost_row(inventory, f"W{weight_bits}A{act_bits}", groups=groups, steps=steps,
                   convention="paper", shared_group_map=config.shared_group_map and not target)
    return {**described, "bits": f"{weight_bits}/{act_bits}", "tbops_paper": row.tbops,
            "model_size_bytes": row.model_size_bytes}


def score_rows(stage, rows: list[tuple], inventory, steps: int, show_progress: bool = True,
               relative_to: Path | None = None) -> dict:
    """Score every (label, config, recipe, graph) row with `stage` (a prepared QualityStage), FP (config and
    recipe None) first; the stage's JSON plus the table rows in order, each naming the graph its images came
    from (relative to `relative_to` when given)."""
    from tqdm import tqdm

    described = []
    with tqdm(rows, desc="quality", unit="config", disable=not show_progress) as bar:
        for label, config, recipe, graph in bar:
            bar.set_postfix_str(label)
            stage.score_graph(label, graph, fp=config is None)
            shown = Path(graph).relative_to(relative_to) if relative_to else Path(graph)
            described.append({**describe(label, config, recipe, inventory, steps), "graph": shown.as_posix()})
    return {**stage.to_json(), "table": described}


def image_graph(shared, result, lowered: dict) -> Path:
    """The graph a configuration's images come from: the faster of its two graphs at the quality batch (64 prompts,
    guidance: 128 latents per call), decided by structure so the choice (and the images) never depend on timing.
    Its integer-lowered graph (the deployable form; int32 accumulators equal to the simulator's) when the lowering
    needed one integer product per op (per-tensor and pixel-grouped activations); its QDQ graph when channel groups
    split each product into one MatMulInteger per group, whose float epilogues make it slower than the QDQ graph
    there (measured at batch 128, load ~2: dgq-w8a8-g8 lowered 1.83 s vs QDQ 0.71 s per call; qdiffusion-w4a6
    lowered 0.39 s vs QDQ 1.01 s)."""
    row = lowered.get(result.preset)
    if row and row["accumulators"] <= row["products"]:
        return shared.out / row["graph"]
    return shared.out / result.graph


def quality_for_run(shared, results: list, stats, figures_dir: Path, lowered: list[dict] = ()) -> dict:
    """`dgq run`'s quality stage: FP (the exported fp32 graph) and every configuration's compiled graph (`image_graph`:
    lowered for onnxruntime-cpu when `lowered`, the deploy stage's rows, has it), each in a default onnxruntime
    session, scored on both prompt sets; plus a grid of their first images."""
    from dgq_compiler.config import preset
    from dgq_compiler.quality.stage import QualityOptions, QualityStage, unsupported
    from dgq_compiler.report.figures import quality_grid

    options = shared.options
    quality_options = QualityOptions(images=options.images, steps=options.steps, guidance=options.guidance,
                                     seed=options.seed, latent_size=options.latent_size)
    reason = unsupported(shared.pipe, quality_options)
    if reason:
        return {"skipped": reason}
    stage = QualityStage(shared.pipe, quality_options)
    rows = [(FP_LABEL, None, None, shared.export_dir / "unet.onnx")]
    by_preset = {row["preset"]: row for row in lowered}
    rows += [(r.preset, preset(r.preset.partition("@")[0]), _recipe(shared, r), image_graph(shared, r, by_preset))
             for r in results]
    quality = score_rows(stage, rows, shared.inventory, steps=len(stats.timesteps), relative_to=shared.out)
    quality["figure"] = quality_grid(stage.images, {n: s.prompts for n, s in stage.sets.items()},
                                     figures_dir / "quality_images.png").name
    return quality


def _recipe(shared, result):
    """A configuration's recipe: in memory, or from its file when it was built in a child process."""
    from dgq_compiler.recipe import Recipe

    return shared.recipes.get(result.preset) or Recipe.load(shared.out / result.recipe)
