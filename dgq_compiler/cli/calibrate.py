"""`dgq calibrate`: the FP sampling loop over a prompt set -> streaming per-timestep statistics."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    from dgq_compiler.calibrate.run import SCHEDULERS  # no torch at import: the CLI still starts fast

    p = sub.add_parser(
        "calibrate", help="run the FP sampling loop over prompts and record per-timestep activation statistics",
        description="Sample with the diffusers pipeline (PNDM, classifier-free guidance: cond + uncond in one batch, "
                    "prompt i seeded seed + i) and record, at every quantization point and distinct timestep, "
                    "per-channel and per-pixel/token min/max and the attention statistics. Writes STATS.json "
                    "(manifest) + STATS.safetensors. Shards (--shard i/n) merge exactly with `dgq merge-stats`. Under torchrun "
                    "(`torchrun --nproc-per-node N -m dgq_compiler calibrate ...`) the ranks split the prompts and "
                    "reduce their statistics with collective min/max (gloo on CPU, NCCL on CUDA): the file one "
                    "process writes.",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("model", help="a local diffusers pipeline folder, 'embedded' (the shipped trained model) or "
                                 "'tiny' (the embedded random pipeline); the statistics record it for `dgq quantize`")
    p.add_argument("-o", "--output", required=True, help="statistics manifest to write (.json; arrays beside it)")
    p.add_argument("--prompts", default=None,
                   help="text file with one prompt per line; None: the 64 built-in calibration prompts")
    p.add_argument("--num-prompts", type=argtypes.count, default=None, help="use only the first N prompts of the set; None: all")
    p.add_argument("--steps", type=argtypes.steps, default=25, help="denoising steps (1 and up: few-step models)")
    p.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="pndm",
                   help="sampler of the FP loop (the pipeline's noise schedule kept); the statistics hold one row "
                        "per distinct timestep it calls the UNet with")
    p.add_argument("--select", type=argtypes.count, default=None, metavar="K",
                   help="EDA-DM calibration set: sample every prompt's FP trajectory (the pool), choose K latents per "
                        "timestep whose distribution matches the pool's (density and diversity: greedy kernel MMD) "
                        "and record statistics on those alone; the summary says how well they match the pool. "
                        "None: statistics over every prompt's trajectory")
    p.add_argument("--guidance", type=argtypes.cfg_guidance, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--seed", type=argtypes.seed, default=0, help="sampling seed (prompt i uses seed + i)")
    p.add_argument("--negative-prompt", default="", help="the unconditional prompt")
    p.add_argument("--latent-size", type=argtypes.latent_size, default=None, help="latent height/width; None: the UNet's sample_size")
    p.add_argument("--shard", default=None, metavar="I/N", help="run only the I-th of N slices of the prompts (0-based)")
    p.add_argument("--device", default=None,
                   help="torch device; None: cuda if available (under torchrun cuda:LOCAL_RANK), else cpu")
    p.add_argument("--model-seed", type=argtypes.seed, default=0, help="weights seed of the 'tiny' model")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(run=run)


def parse_shard(text: str | None):
    from dgq_compiler.errors import DgqError

    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise DgqError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    return i, n


def run(args) -> int:
    import time

    from dgq_compiler.calibrate import distributed
    from dgq_compiler.calibrate.run import calibrate, open_pipeline, read_prompts, shard_indices
    from dgq_compiler.cli.argtypes import check_attention_memory
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import output_manifest
    from dgq_compiler.run import default_guidance, resolve_model

    out = output_manifest(args.output, args.overwrite)
    if args.guidance is None:
        args.guidance = default_guidance(resolve_model(args.model)[0])
    prompts = read_prompts(args.prompts)
    if args.num_prompts is not None:
        prompts = prompts[: args.num_prompts]
    rank = None
    if distributed.launched_by_torchrun():
        if args.shard is not None:
            raise DgqError("--shard splits prompts across independent jobs; under torchrun the ranks split them "
                           "already: drop --shard")
        rank = distributed.init_rank(args.device)
        indices = shard_indices(len(prompts), (rank.rank, rank.world))
    else:
        indices = shard_indices(len(prompts), parse_shard(args.shard))
    pipe = open_pipeline(resolve_model(args.model)[0], seed=args.model_seed,
                         device=rank.device if rank else args.device)
    check_attention_memory(pipe.unet.config, args.latent_size or int(pipe.unet.config.sample_size), 2)  # cond+uncond
    start = time.perf_counter()
    if args.select is not None:
        return _run_selected(args, pipe, prompts, rank, out, start)
    stats = calibrate(pipe, prompts, model_name=args.model, steps=args.steps, guidance=args.guidance,
                      seed=args.seed, indices=indices, latent_size=args.latent_size,
                      negative_prompt=args.negative_prompt,
                      model_seed=args.model_seed if args.model == "tiny" else None,
                      progress=rank is None or rank.rank == 0, scheduler=args.scheduler)
    if rank is not None:
        stats = distributed.reduce_stats(stats, rank)
        indices = list(stats.prompt_indices)
    seconds = time.perf_counter() - start
    if rank is not None and rank.rank != 0:
        distributed.finish()  # rank 0 writes the file and the summary
        return 0
    stats.save(out, overwrite=args.overwrite)
    if rank is not None:
        distributed.finish()
    roles: dict = {}
    for p in stats.points:
        roles[p.role] = roles.get(p.role, 0) + 1
    size = out.with_suffix(".safetensors").stat().st_size
    rows = [["statistics", f"{out} (+ {out.with_suffix('.safetensors').name}, {size / 1e6:.2f} MB)"],
            ["prompts", f"{len(indices)} of {len(prompts)} (indices {indices[0]}..{indices[-1]})"],
            ["timesteps (T)", f"{stats.T}: {stats.timesteps[0]} .. {stats.timesteps[-1]} ({args.scheduler}, "
                              f"{args.steps} steps)"],
            ["latent resolution", "x".join(map(str, stats.resolution))],
            ["points", ", ".join(f"{r} {n}" for r, n in roles.items())],
            ["device", f"{pipe.device} x {rank.world} ranks ({rank.backend})" if rank else str(pipe.device)],
            ["time", f"{seconds:.1f} s ({seconds / len(indices):.2f} s per prompt)"]]
    print(format_table(["calibrate", args.model], rows))
    return 0


def _run_selected(args, pipe, prompts, rank, out, start) -> int:
    """`--select K`: one process over the whole pool (selection compares every prompt's latents)."""
    import time

    from dgq_compiler.calibrate.run import calibrate_selected
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError

    if rank is not None or args.shard is not None:
        raise DgqError("--select chooses among every prompt's latents: it runs in one process (drop --shard / "
                       "torchrun)")
    if args.select > len(prompts):
        raise DgqError(f"--select {args.select} exceeds the pool: {len(prompts)} prompts give {len(prompts)} latents "
                       "per timestep")
    if pipe.device.type != "cpu":
        raise DgqError(f"--select samples its pool on the CPU (the sampling loop it shares with dgq evaluate), not "
                       f"{pipe.device}: drop --device")
    if args.negative_prompt:
        raise DgqError("--select samples with the empty unconditional prompt: drop --negative-prompt")
    stats, calset = calibrate_selected(pipe, prompts, args.select, model_name=args.model, steps=args.steps,
                                       guidance=args.guidance, seed=args.seed, latent_size=args.latent_size,
                                       model_seed=args.model_seed if args.model == "tiny" else None,
                                       scheduler=args.scheduler)
    seconds = time.perf_counter() - start
    stats.save(out, overwrite=args.overwrite)
    summary = calset.summary()
    rows = [["statistics", f"{out} (+ {out.with_suffix('.safetensors').name})"],
            ["pool", f"{len(prompts)} prompts x {stats.T} timesteps ({args.scheduler}, {args.steps} steps)"],
            ["chosen", f"{args.select} latents per timestep (density and diversity: greedy kernel MMD)"],
            ["match: kernel MMD to the pool", f"{summary['mean_mmd']:.4f} (random subsets of {args.select}: "
                                              f"{summary['mean_random_mmd']:.4f})"],
            ["match: mean error (pool std)", f"{summary['mean_mean_error']:.4f}"],
            ["match: std ratio error", f"{summary['mean_std_error']:.4f}"],
            ["timesteps (T)", f"{stats.T}: {stats.timesteps[0]} .. {stats.timesteps[-1]}"],
            ["time", f"{seconds:.1f} s"]]
    print(format_table(["calibrate --select", args.model], rows))
    return 0
