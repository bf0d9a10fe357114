"""A configuration -> its recipe, whatever methods it combines: DGQ groups / MixDQ's per-layer widths (a
sensitivity table and an ILP allocation) / EDA-DM's reconstructed weights. `dgq run` calls `recipe_for_run`;
`dgq quantize --allocation` and `dgq allocate` use the pieces directly.

Order: quantize (groups, per-layer widths) -> reconstruct. EDA-DM's stage is the edadm engineer's
`dgq_compiler.edadm.reconstruct_recipe(recipe, unet, calibration, ReconstructOptions(seed=...)) -> (Recipe, report)`
(a recipe + calibration data in, a recipe with learned weight codes out; it keeps every entry's width, so MixDQ's
allocation survives),
with `calibration` from `dgq_compiler.edadm.calibration_for_run(pipe, prompts, options)`; configs with
`reconstruct` need it.
"""
from __future__ import annotations

from pathlib import Path

from dgq_compiler.errors import DgqError

SENSITIVITY_PROMPTS = 4   # calibration prompts sampled for the sensitivity calls (never the held-out ones)
SENSITIVITY_CALLS = 6     # UNet calls kept, spread over the schedule


def check_allocation(allocation, stats, config=None) -> None:
    if allocation.config_sha256 != stats.config_sha256:
        raise DgqError(f"the bit allocation was made for another model ({allocation.model_name!r}, config "
                       f"{allocation.config_sha256[:12]}) than these statistics ({stats.config_sha256[:12]})")
    from dgq_compiler.mixdq.allocate import is_fp

    fp = sorted(m for m, widths in allocation.layers.items() if is_fp(widths))
    if fp and config is not None and not config.mixed_fp:
        raise DgqError(f"the bit allocation leaves {len(fp)} layer(s) in full precision (e.g. {fp[0]!r}) but config "
                       f"{config.name} does not allow FP layers: use a -fp preset (e.g. mixdq-w5a8-fp)")


def sensitivity_calls(pipe, prompts, steps: int, guidance: float, seed: int, latent_size=None,
                      count: int = SENSITIVITY_CALLS) -> list:
    from dgq_compiler.mixdq.sensitivity import record_calls

    prompts = list(prompts)[:SENSITIVITY_PROMPTS]
    return record_calls(pipe, prompts, [seed + i for i in range(len(prompts))], steps, guidance, count, latent_size)


def recipe_for_run(name: str, config, stats, pipe, out: Path, options):
    """The recipe of one `dgq run` configuration; MixDQ's table and allocation are written to out/mixdq/
    (the table once per base configuration, reused by every budget)."""
    from dgq_compiler.quantize import quantize_stats

    widths = None
    if config.mixed:
        from dgq_compiler.calibrate.run import read_prompts
        from dgq_compiler.mixdq.allocate import Budget, allocate
        from dgq_compiler.mixdq.sensitivity import SensitivityTable, measure

        folder = out / "mixdq"
        folder.mkdir(exist_ok=True)
        base = config.replace(mixed_weight_bits=None, mixed_act_bits=None, mixed_fp=False)
        # without an input budget only the weights are measured (activations FP): one table per weight quantizer
        key = base.name if config.mixed_act_bits is not None else f"weights-{config.weight_method}"
        table_path = folder / f"sensitivity-{key}.json"
        if table_path.is_file():
            table = SensitivityTable.load(table_path)
        else:
            calls = sensitivity_calls(pipe, read_prompts(options.prompts), options.steps, options.guidance,
                                      options.seed, options.latent_size)
            table = measure(pipe, stats, config, calls, prompts=len(calls[0].states) // 2)
            table.save(table_path)
        allocation = allocate(table, Budget.of_config(config), fixed_weight=config.weight_bits)
        allocation.save(folder / f"allocation-{name}.json", overwrite=True)
        widths = allocation.widths()
    recipe, _summary = quantize_stats(stats, config, pipe.unet, widths=widths)
    if config.reconstruct:
        recipe = _reconstructed(recipe, pipe, options)
    return recipe


def _reconstructed(recipe, pipe, options):
    """EDA-DM's fine-grained block reconstruction of the recipe's weights (learned rounding, same widths)."""
    from dgq_compiler.calibrate.run import read_prompts
    from dgq_compiler.edadm import RUN_ITERATIONS, ReconstructOptions, calibration_for_run, reconstruct_recipe

    calibration = calibration_for_run(pipe, read_prompts(options.prompts), options)
    return reconstruct_recipe(recipe, pipe.unet, calibration,
                              ReconstructOptions(iterations=RUN_ITERATIONS, seed=options.seed))[0]


def compiled_inventory(graph: Path, config, inventory):
    """The cost inventory of a compiled graph, each op carrying the widths the graph gives it, when they differ
    from one width everywhere (MixDQ's per-layer allocation, the FP <start> row of a BOS-aware text embedding);
    None otherwise (the fp32 `inventory` at the configuration's widths says the same)."""
    if not (config.mixed or config.text_bos_fp):
        return None
    from simulator.cost.macs_from_graph import inventory_from_graph

    return inventory_from_graph(graph, batch=inventory.batch, resolution=inventory.resolution[0])


def compiled_cost_row(graph: Path, config, inventory, steps: int):
    """The cost row of a compiled graph at its own per-op widths, or None for configurations with one width
    everywhere (compiled_inventory)."""
    compiled = compiled_inventory(graph, config, inventory)
    if compiled is None:
        return None
    from simulator.cost import cost_row

    return cost_row(compiled, "W8A8", groups=config.groups, steps=steps, convention="exact", compiled=True,
                    shared_group_map=config.shared_group_map)
