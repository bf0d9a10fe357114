"""`dgq reconstruct`: a recipe + a chosen calibration set -> the recipe with learned weight rounding (EDA-DM)."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    from dgq_compiler.calibrate.run import SCHEDULERS  # no torch at import

    p = sub.add_parser(
        "reconstruct", help="learn each block's weight rounding against the FP block (EDA-DM / BRECQ, AdaRound)",
        description="Sample the FP trajectories of the calibration prompts (the pool), choose K latents per timestep "
                    "by density and diversity, and reconstruct every UNet block (residual and transformer blocks, "
                    "down/upsamplers; lone layers on their own) against the FP block on them: AdaRound learns whether "
                    "each weight rounds down or up on the recipe's grid, with losses at the block output and at the "
                    "layers inside it, activations fake-quantized by the recipe. A block keeps the learned rounding "
                    "only where it lowers that loss on the whole set. Writes a recipe whose weight codes `dgq "
                    "compile` uses as they are (scales, zero points and activation quantizers unchanged). "
                    "Give the --scheduler and --steps the statistics were calibrated with.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("recipe", help="recipe manifest from `dgq quantize`")
    p.add_argument("-o", "--output", required=True, help="recipe manifest to write (.json; arrays beside it)")
    p.add_argument("--model", default=None,
                   help="the pipeline: 'embedded', 'tiny' or a local diffusers pipeline folder; None: the model "
                        "the recipe names")
    p.add_argument("--prompts", default=None, help="text file, one prompt per line; None: the model's calibration "
                                                   "prompts (the shapes captions for the embedded model)")
    p.add_argument("--num-prompts", type=argtypes.count, default=16, help="prompts in the pool (first N)")
    p.add_argument("--samples-per-step", type=argtypes.count, default=4,
                   help="latents chosen per timestep (each a CFG pair: 2 UNet rows)")
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="pndm", help="sampler of the FP trajectories")
    p.add_argument("--steps", type=argtypes.steps, default=None, help="sampling steps; None: the recipe's T")
    p.add_argument("--guidance", type=argtypes.cfg_guidance, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--iterations", type=argtypes.int_range(1, 100000), default=300,
                   help="optimiser steps per block")
    p.add_argument("--learning-rate", type=argtypes.float_range(0.0, 10.0, low_inclusive=False),
                   default=1e-2, help="Adam learning rate of the rounding variables")
    p.add_argument("--layer-weight", type=argtypes.float_range(0.0, 1000.0), default=1.0,
                   help="weight of the fine-grained loss (the layers inside each block) beside the block output's")
    p.add_argument("--guidance-weight", type=argtypes.float_range(0.0, 1000.0), default=0.0,
                   help="weight of the guidance-direction term (what the text changes in each block's output: "
                        "its cond - uncond halves); 0: off")
    p.add_argument("--no-activations", action="store_true",
                   help="reconstruct with FP activations (default: fake-quantized by the recipe)")
    p.add_argument("--act-steps", action="store_true",
                   help="also learn the step sizes of each block's layer inputs (LSQ), kept with the rounding")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="sampling and reconstruction seed")
    p.add_argument("--model-seed", type=argtypes.seed, default=0, help="weights seed of the 'tiny' model")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def run(args) -> int:
    import time

    from tqdm import tqdm

    from dgq_compiler.calibrate.run import open_pipeline, read_prompts, use_scheduler
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.edadm.calset import select_calibration_set
    from dgq_compiler.edadm.reconstruct import ReconstructOptions, find_blocks, reconstruct_recipe
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import output_manifest
    from dgq_compiler.recipe import Recipe
    from dgq_compiler.run import default_guidance, default_prompt_files, resolve_model

    out = output_manifest(args.output, args.overwrite)
    options = ReconstructOptions(iterations=args.iterations, learning_rate=args.learning_rate,
                                 layer_weight=args.layer_weight,
                                 guidance_weight=args.guidance_weight, activations=not args.no_activations,
                                 act_steps=args.act_steps, seed=args.seed)
    recipe = Recipe.load(args.recipe)  # a bad file fails here, before the pipeline loads
    source, label = resolve_model(args.model or recipe.model_name)
    if args.guidance is None:
        args.guidance = default_guidance(source)
    prompts = read_prompts(args.prompts or default_prompt_files(source)[0])[: args.num_prompts]
    if args.samples_per_step > len(prompts):
        raise DgqError(f"--samples-per-step {args.samples_per_step} exceeds the pool: {len(prompts)} prompts give "
                       f"{len(prompts)} latents per timestep")
    steps = args.steps or recipe.T
    pipe = open_pipeline(source, seed=args.model_seed, device="cpu")
    recipe = Recipe.load(args.recipe, unet_config=pipe.unet.config)  # made for this UNet?
    recipe.check_unet(pipe.unet)
    use_scheduler(pipe, args.scheduler)
    pipe.scheduler.set_timesteps(steps)
    sampled = sorted({int(round(float(t))) for t in pipe.scheduler.timesteps}, reverse=True)
    foreign = [t for t in sampled if t not in recipe.timesteps]
    if foreign:
        raise DgqError(f"{args.scheduler} at {steps} steps samples timesteps {foreign[:4]} that the recipe was not "
                       f"calibrated at ({list(recipe.timesteps)[:4]}...): give the calibration's --scheduler/--steps")
    start = time.perf_counter()
    calset = select_calibration_set(pipe, prompts, args.samples_per_step, steps=steps, guidance=args.guidance,
                                    seed=args.seed)
    blocks = find_blocks(pipe.unet, recipe)
    with tqdm(total=len(blocks), desc="reconstruct", unit="block") as bar:
        def progress(result):
            bar.set_postfix_str(f"{result.block}: {result.loss_nearest:.4f} -> {result.loss_learned:.4f}")
            bar.update()
        new_recipe, report = reconstruct_recipe(recipe, pipe.unet, calset, options, progress=progress)
    seconds = time.perf_counter() - start
    new_recipe.save(out, overwrite=args.overwrite)

    rows = [[b.block, str(b.layers), f"{b.loss_nearest:.5f}", f"{b.loss_learned:.5f}", b.kept, f"{b.flipped:.1%}",
             f"{b.seconds:.1f}"] for b in report.blocks]
    print(format_table(["block", "layers", "loss (nearest)", "loss (learned)", "kept", "codes changed", "s"], rows))
    totals, summary = report.totals(), calset.summary()
    print(format_table(["reconstruct", label], [
        ["recipe", f"{out} (+ {out.with_suffix('.safetensors').name}), from {args.recipe}"],
        ["calibration set", f"{summary['chosen_per_step']} of {summary['pool_per_step']} latents per timestep x "
                            f"{len(calset.timesteps)} timesteps ({args.scheduler}); kernel MMD to the pool "
                            f"{summary['mean_mmd']:.4f} (random: {summary['mean_random_mmd']:.4f})"],
        ["blocks", f"{totals['blocks']}, {totals['learned']} with learned rounding"],
        ["total block loss", f"{totals['loss_nearest']:.5f} (nearest) -> {totals['loss_after']:.5f}"],
        ["options", f"{options.iterations} iterations, lr {options.learning_rate:g}, layer weight "
                    f"{options.layer_weight:g}, activations {'quantized' if options.activations else 'FP'}, "
                    f"seed {options.seed}"],
        ["time", f"{seconds:.1f} s"]]))
    return 0
