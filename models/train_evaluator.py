"""Train the shapes evaluator (attribute classifier) on freshly rendered scenes of every combination.

    python -m models.train_evaluator --out models/trained/evaluator --seed 0

It sees every attribute combination, held-out pairs included: it is the judge, not the generator.
Generated images are softer and noisier than rendered ones, so training adds random blur, noise and
small shifts; accuracy is reported on a fresh batch from another seed.
"""
from __future__ import annotations

import json
import time

import numpy as np

from models.evaluator import EvaluatorConfig, build_network, load_evaluator, save_evaluator
from models.shapes_dataset import ATTRIBUTES, render_batch
from models.training_cli import run_training, training_parser


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per image: a 3x3 box blur half the time, Gaussian noise of random strength, a shift of up to 1 px."""
    out = images.copy()
    n = len(out)
    blur = rng.random(n) < 0.5
    if blur.any():
        padded = np.pad(out[blur], ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        out[blur] = sum(padded[:, :, dy:dy + out.shape[2], dx:dx + out.shape[3]]
                        for dy in range(3) for dx in range(3)) / 9.0
    out += rng.normal(0, 1, out.shape).astype(np.float32) * rng.uniform(0, 0.12, (n, 1, 1, 1)).astype(np.float32)
    shifts = rng.integers(-1, 2, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        if dy or dx:
            out[i] = np.roll(out[i], (dy, dx), axis=(1, 2))
    return np.clip(out, -1, 1)


def accuracy(evaluator, seed: int, n: int = 1024) -> dict[str, float]:
    """Per-attribute accuracy and all-attributes-right rate on `n` fresh scenes from `seed`."""
    batch = render_batch(np.random.default_rng(seed), n, heldout=None)
    _, predicted = evaluator.run(batch.images)
    result = {name: float((predicted[name] == batch.labels[name]).mean()) for name in ATTRIBUTES}
    result["all"] = float(np.mean([all(predicted[k][i] == batch.labels[k][i] for k in ATTRIBUTES)
                                   for i in range(n)]))
    return result


def train(out, seed: int = 0, steps: int = 1500, batch: int = 64, threads: int = 2, quiet: bool = False,
          overwrite: bool = False) -> dict:
    import torch
    from tqdm import tqdm

    from models.files import atomic_path, check_writable

    check_writable(out, overwrite=overwrite, kind="folder")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = EvaluatorConfig()
    network = build_network(config)
    opt = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)
    start = time.perf_counter()
    network.train()
    for step in tqdm(range(steps), desc="evaluator", disable=quiet, mininterval=5):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        data = render_batch(rng, batch, heldout=None)
        _, logits = network(torch.from_numpy(augment(data.images, rng)))
        loss = sum(torch.nn.functional.cross_entropy(logits[name], torch.from_numpy(data.labels[name]))
                   for name in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    network.eval()
    seconds = time.perf_counter() - start
    with atomic_path(out, directory=True) as tmp:
        save_evaluator(network, config, tmp, extra={"training": {"seed": seed, "steps": steps, "batch": batch}})
    summary = {"accuracy_fresh_seed_12345": accuracy(load_evaluator(out), seed=12345),
               "seconds": round(seconds, 1)}
    if not quiet:
        print(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, "folder for config.json + model.safetensors")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    return run_training(train, args.out, args.seed, args.steps, args.batch, args.threads, overwrite=args.overwrite)


if __name__ == "__main__":
    raise SystemExit(main())
