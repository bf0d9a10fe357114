"""`dgq evaluate`: sample a pipeline on a prompt file, write a labelled image grid, score alignment and FD."""
from __future__ import annotations

from dgq_compiler.cli import argtypes


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="generate images for prompts and score them with the shapes evaluator",
        description="Generate one image per prompt (PNDM, classifier-free guidance), write a labelled "
                    "grid PNG, and print the shapes evaluator's text-image alignment (share of prompted "
                    "attributes recognised; CLIP-score analogue) and Fréchet distance to real rendered "
                    "scenes of the same prompts (FID analogue).",
        formatter_class=argtypes.HelpFormatter)
    p.add_argument("--pipeline", default=None,
                   help="local diffusers pipeline folder (default: the embedded trained shapes model)")
    p.add_argument("--prompts", default=None,
                   help="text file, one prompt per line (default: the held-out shapes prompts)")
    p.add_argument("-o", "--output", required=True, help="grid image to write (.png)")
    p.add_argument("--steps", type=argtypes.steps, default=25, help="PNDM denoising steps")
    p.add_argument("--guidance", type=argtypes.guidance, default=None,
                   help=argtypes.GUIDANCE_HELP)
    p.add_argument("--seed", type=argtypes.seed, default=0, help="sampling seed (one generator for the whole run)")
    p.add_argument("--batch", type=argtypes.batch, default=16, help="prompts sampled together")
    p.add_argument("--limit", type=argtypes.count, default=None, help="use only the first N prompts")
    p.add_argument("--images-per-prompt", type=argtypes.int_range(1, 64), default=1,
                   help="images sampled per prompt (more give a steadier Fréchet distance)")
    p.add_argument("--evaluator", default=None, help="evaluator folder (default: the shipped one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing grid image")
    p.set_defaults(run=run)


def read_prompts(path) -> list[str]:
    from pathlib import Path

    from dgq_compiler.errors import DgqError

    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DgqError(f"cannot read prompt file {str(path)!r}: {exc}") from None
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise DgqError(f"prompt file {str(path)!r} has no prompts (one per line expected)")
    return prompts


def generate(pipe, prompts: list[str], steps: int, guidance: float, seed: int, batch: int, progress=None):
    """[N, H, W, 3] float images in [0, 1]; one torch generator drawn in order, so the run is deterministic."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, len(prompts), batch):
        out = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=guidance,
                   generator=generator, output_type="np")
        chunks.append(np.asarray(out.images, dtype=np.float32))
        if progress:
            progress(len(chunks[-1]))
    return np.concatenate(chunks)


def write_grid(images, prompts: list[str], path, columns: int = 8, scale: int = 4) -> None:
    """Images upscaled `scale`x (nearest), each with its prompt wrapped underneath."""
    import textwrap

    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    cell_w = images.shape[2] * scale
    text_h = 44
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (cell_w + 4), rows * (cell_w + text_h + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        x, y = (i % columns) * (cell_w + 4), (i // columns) * (cell_w + text_h + 4)
        tile = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
        grid.paste(tile.resize((cell_w, cell_w), Image.NEAREST), (x + 2, y + 2))
        for k, line in enumerate(textwrap.wrap(prompt, width=cell_w // 6)[:4]):
            draw.text((x + 2, y + cell_w + 3 + 10 * k), line, fill="black", font=font)
    grid.save(path, format="PNG")


def run(args) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.io import atomic_path, check_writable
    from dgq_compiler.run import default_guidance, resolve_model
    from models.evaluator import load_evaluator
    from models.loader import load_pipeline
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    if Path(args.output).suffix.lower() != ".png":
        raise DgqError(f"output {args.output!r} must be a .png file")
    check_writable(args.output, overwrite=args.overwrite)
    prompts_path = Path(args.prompts) if args.prompts else shapes_prompts_file("shapes_heldout.txt")
    prompts = [p for p in read_prompts(prompts_path)[:args.limit] for _ in range(args.images_per_prompt)]
    if len(prompts) < 2:
        raise DgqError(f"the Fréchet distance needs at least 2 images: {len(prompts) // args.images_per_prompt} "
                       f"prompt(s) from {str(prompts_path)!r}{' (--limit)' if args.limit else ''} x "
                       f"{args.images_per_prompt} image(s) per prompt (raise --limit or --images-per-prompt)")
    evaluator = load_evaluator(args.evaluator)
    pipe = load_pipeline(args.pipeline or trained_pipeline_dir())
    if args.guidance is None:
        args.guidance = default_guidance(resolve_model(args.pipeline or "embedded")[0])
    torch.manual_seed(args.seed)
    with tqdm(total=len(prompts), desc="sampling", unit="image") as bar:
        images = generate(pipe, prompts, args.steps, args.guidance, args.seed, args.batch, bar.update)
    if images.shape[1:3] != (32, 32):
        raise DgqError(f"the shapes evaluator scores 32x32 images; this pipeline makes "
                       f"{images.shape[2]}x{images.shape[1]}")
    alignment = evaluator.alignment(images, prompts)
    shift = args.images_per_prompt  # each image scored against the next prompt: a data-driven chance level
    mismatched = evaluator.alignment(images, prompts[shift:] + prompts[:shift])
    fd = evaluator.frechet_distance(images, prompts, seed=args.seed)
    with atomic_path(args.output) as tmp:
        write_grid(images, prompts, tmp)
    rows = [["pipeline", str(args.pipeline or trained_pipeline_dir())],
            ["prompts", f"{len(prompts) // args.images_per_prompt} x {args.images_per_prompt} from {prompts_path}"],
            ["sampling", f"PNDM {args.steps} steps, guidance {args.guidance:g}, seed {args.seed}"],
            ["alignment", f"{alignment.score:.3f}"],
            ["  chance (uniform guessing)", f"{alignment.chance:.3f}"],
            ["  images vs shifted prompts", f"{mismatched.score:.3f}"],
            *[[f"  {name}", f"{rate:.3f}"] for name, rate in alignment.per_attribute.items()],
            ["Fréchet distance (evaluator features)", f"{fd:.2f}"],
            ["grid", args.output]]
    print(format_table(["evaluate", ""], rows))
    return 0
