"""The quality stage: images from each compiled graph in onnxruntime on two prompt sets, scored with intervals.

`QualityStage` is prepared once (evaluator and its check, prompt requests, real-scene reference features,
the bootstrap resamples, the real-scene ceiling) and then scores any number of graphs, FP first: every graph
gets the same prompts and seeds, so its images are paired with FP's and with each other's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dgq_compiler.errors import DgqError
from dgq_compiler.quality.intervals import LEVEL, RESAMPLES, resample_indices
from dgq_compiler.quality.metrics import METRICS, SetScore, paired_difference, score_set

SET_NAMES = ("heldout", "rephrased")
SEED_STRIDE = 100_000      # set k's image i starts from seed + k * SEED_STRIDE + i
REFERENCE_SEED = 1         # real scenes for the Fréchet reference (the ceiling row draws from REFERENCE_SEED + 1)
# Images per configuration on each set (in SET_NAMES order). The rephrased set gets twice the held-out set's: FP is
# far from its ceiling there (0.71 against 0.97), so one image's alignment spreads more (FP's 95% interval 0.115
# wide at 32 images against 0.042), and at 32 the per-tensor W4A6 baseline's interval still overlapped FP's
# though the paired loss excluded zero; at 64 they separate (README, "Image quality").
DEFAULT_IMAGES = (32, 64)
EVALUATOR_SIZE = 32        # the shapes evaluator scores 32 x 32 images


@dataclass(frozen=True)
class QualityOptions:
    # per configuration: one count per set (in `sets` order) or one for all (prompts cycle, seeds do not)
    images: int | tuple[int, ...] = DEFAULT_IMAGES
    steps: int = 25
    guidance: float = 7.5
    seed: int = 0
    latent_size: int | None = None
    resamples: int = RESAMPLES
    level: float = LEVEL
    reference_per_prompt: int = 16   # real rendered scenes per prompt for the Fréchet reference
    check_per_prompt: int = 4        # fresh scenes per prompt for the evaluator check
    batch: int = 64                  # prompts per pipeline call
    sets: tuple[str, ...] = SET_NAMES

    def __post_init__(self):
        unknown = [name for name in self.sets if name not in SET_NAMES]
        if unknown or not self.sets:
            raise DgqError(f"prompt sets must be some of {', '.join(SET_NAMES)}, got {', '.join(self.sets) or 'none'}")
        counts = (self.images,) if isinstance(self.images, int) else tuple(self.images)
        if len(counts) not in (1, len(self.sets)) or min(counts) < 2:
            raise DgqError(f"--images must be one count of at least 2 (a Fréchet distance needs two images) or one "
                           f"per prompt set ({', '.join(self.sets)}), got {','.join(map(str, counts))}")
        object.__setattr__(self, "images", counts[0] if len(counts) == 1 else counts)

    def count(self, name: str) -> int:
        """Images per configuration on prompt set `name`."""
        return self.images if isinstance(self.images, int) else self.images[self.sets.index(name)]


def requests(prompts: tuple[str, ...], images: int, seed: int, set_index: int) -> tuple[list[str], list[int]]:
    """(prompt, seed) of each image: the set's prompts in order, cycled; one seed per image."""
    return ([prompts[i % len(prompts)] for i in range(images)],
            [seed + set_index * SEED_STRIDE + i for i in range(images)])


def generate(pipe, graph: str | Path, prompts: list[str], seeds: list[int], options: QualityOptions) -> np.ndarray:
    """[N, H, W, 3] float images in [0, 1]: the diffusers pipeline with `graph` as its UNet in a default
    onnxruntime session; image i starts from seed i's latent whatever the batch (sampling.initial_latents)."""
    import torch

    from dgq_compiler.onnx_pipeline import with_onnx_unet
    from dgq_compiler.sampling import initial_latents

    onnx_pipe = with_onnx_unet(pipe, graph)
    size = (options.latent_size or int(pipe.unet.config.sample_size)) * pipe.vae_scale_factor
    chunks = []
    for start in range(0, len(prompts), options.batch):
        latents = torch.from_numpy(initial_latents(pipe, seeds[start:start + options.batch], options.latent_size))
        out = onnx_pipe(prompts[start:start + options.batch], height=size, width=size, latents=latents,
                        num_inference_steps=options.steps, guidance_scale=options.guidance, output_type="np")
        chunks.append(np.asarray(out.images, dtype=np.float32))
    return np.concatenate(chunks)


def unsupported(pipe, options: QualityOptions) -> str | None:
    """Why this pipeline's images cannot be scored (None when they can)."""
    size = (options.latent_size or int(pipe.unet.config.sample_size)) * pipe.vae_scale_factor
    if size != EVALUATOR_SIZE:
        return (f"the shapes evaluator scores {EVALUATOR_SIZE}x{EVALUATOR_SIZE} images; this pipeline makes "
                f"{size}x{size} (image metrics of real-size models need their own evaluator)")
    return None


class QualityStage:
    """Prepared once per run; `score_graph` per row (FP first, `fp=True`); `to_json` for summary.json."""

    def __init__(self, pipe, options: QualityOptions = QualityOptions()):
        from dgq_compiler.quality.evaluator_check import check_evaluator
        from models.evaluator import load_evaluator, reference_batch
        from models.prompt_sets import load_prompt_set, parse_prompt

        reason = unsupported(pipe, options)
        if reason:
            raise DgqError(reason)
        self.pipe, self.options, self.parse = pipe, options, parse_prompt
        self.evaluator = load_evaluator()
        self.sets = {name: load_prompt_set(name) for name in options.sets}
        self.evaluator_check = check_evaluator(self.evaluator, list(self.sets.values()), options.check_per_prompt)
        self.requests = {name: requests(s.prompts, options.count(name), options.seed, SET_NAMES.index(name))
                         for name, s in self.sets.items()}
        self.indices = {name: resample_indices(options.count(name), options.resamples, options.seed)
                        for name in self.sets}
        self.reference, self.real = {}, {}
        for name, (prompts, _seeds) in self.requests.items():
            distinct = list(dict.fromkeys(prompts))
            self.reference[name] = self.evaluator.reference_features(distinct, options.reference_per_prompt,
                                                                     REFERENCE_SEED, parse_prompt)
            real = reference_batch(prompts, 1, REFERENCE_SEED + 1, parse_prompt).images  # the ceiling
            self.real[name] = self._score(name, real)
        self.scores: dict[str, dict[str, SetScore]] = {}
        self.images: dict[str, dict[str, np.ndarray]] = {}
        self.fp_label: str | None = None

    def _score(self, name: str, images) -> SetScore:
        prompts, _ = self.requests[name]
        return score_set(self.evaluator, images, prompts, self.parse, self.reference[name], self.indices[name],
                         self.options.level)

    def score_graph(self, label: str, graph: str | Path, fp: bool = False) -> dict[str, SetScore]:
        """Generate and score `graph`'s images on every set; `fp`: the row the others are compared with."""
        names = list(self.requests)
        prompts = [p for n in names for p in self.requests[n][0]]
        seeds = [s for n in names for s in self.requests[n][1]]
        images = generate(self.pipe, graph, prompts, seeds, self.options)
        as_saved = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)  # scored as a user would keep them
        ends = np.cumsum([self.options.count(n) for n in names])[:-1]  # the sets' images, one after the other
        self.images[label] = dict(zip(names, np.split(as_saved, ends)))
        self.scores[label] = {n: self._score(n, im.astype(np.float32) / 255.0) for n, im in self.images[label].items()}
        if fp:
            self.fp_label = label
        return self.scores[label]

    def versus_fp(self, label: str, name: str) -> dict:
        """Per metric: do the intervals of `label` and FP separate; the paired difference and whether it excludes 0."""
        score, fp = self.scores[label][name], self.scores[self.fp_label][name]
        out = {}
        for metric in METRICS:
            delta = paired_difference(score, fp, metric, self.options.level)
            out[metric] = {"separates": score.metric(metric).separates_from(fp.metric(metric)),
                           "paired_delta": delta.to_json(), "paired_differs": delta.excludes(0.0)}
        return out

    def to_json(self) -> dict:
        opts = self.options
        return {"options": {**asdict(opts), "intervals": "alignment: percentile bootstrap, resamples shared by every "
                                                         "row (paired); Fréchet, IS-like: jackknife (normal)"},
                "sets": {n: {"description": s.description, "prompts": len(s.prompts), "images": opts.count(n),
                             "seeds": [self.requests[n][1][0], self.requests[n][1][-1]]}
                         for n, s in self.sets.items()},
                "evaluator_check": self.evaluator_check,
                "real": {n: s.to_json() for n, s in self.real.items()},
                "fp": self.fp_label,
                "configs": {label: {n: {**s.to_json(),
                                        **({"versus_fp": self.versus_fp(label, n)} if label != self.fp_label else {})}
                                    for n, s in sets.items()}
                            for label, sets in self.scores.items()}}
