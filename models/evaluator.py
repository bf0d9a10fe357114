"""The shapes evaluator: a small CNN attribute classifier, the project's stand-in for CLIP score and FID.

- `alignment(images, prompts)`: the share of the attributes each prompt asks for (shape, colour,
  size, position, count, background) that the classifier recognises in its image (CLIP-score analogue).
- `frechet_distance(images, prompts)`: Fréchet distance between the classifier's penultimate features
  of the images and of real rendered scenes of the same prompts, drawn deterministically on the fly
  (FID analogue).

Weights are safetensors, the architecture and vocabularies a JSON config: nothing is unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from models.errors import ModelError
from models.shapes_dataset import ATTRIBUTES, IMAGE_SIZE, Scene, batch_of, parse_caption, sample_scene

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class EvaluatorConfig:
    widths: tuple[int, int, int] = (32, 64, 96)
    feature_dim: int = 64
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = tuple(ATTRIBUTES.items())

    def __post_init__(self):
        if len(self.widths) != 3 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ModelError(f"evaluator widths must be three positive integers, got {self.widths!r}")
        if not isinstance(self.feature_dim, int) or self.feature_dim < 2:
            raise ModelError(f"evaluator feature_dim must be an integer >= 2, got {self.feature_dim!r}")

    def to_json(self) -> dict:
        return {"widths": list(self.widths), "feature_dim": self.feature_dim,
                "attributes": {name: list(values) for name, values in self.attributes}}

    @classmethod
    def from_json(cls, data: dict) -> "EvaluatorConfig":
        try:
            attributes = tuple((str(k), tuple(str(v) for v in vs)) for k, vs in data["attributes"].items())
            return cls(tuple(int(w) for w in data["widths"]), int(data["feature_dim"]), attributes)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"evaluator config is malformed: {exc!r}") from None


def build_network(config: EvaluatorConfig):
    """Three conv stages (32 -> 16 -> 8 -> 4 px), a feature layer that keeps where things are, one head per attribute."""
    import torch
    from torch import nn

    class AttributeNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for width in config.widths:
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                           nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                           nn.MaxPool2d(2)]
                c_in = width
            self.body = nn.Sequential(*layers)
            # Flattening (not global pooling) keeps the layout the position/count heads need.
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(c_in * (IMAGE_SIZE // 8) ** 2, config.feature_dim),
                                          nn.SiLU())
            self.heads = nn.ModuleDict({name: nn.Linear(config.feature_dim, len(values))
                                        for name, values in config.attributes})

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            features = self.features(self.body(images))
            return features, {name: head(features) for name, head in self.heads.items()}

    return AttributeNet()


def default_evaluator_dir() -> Path:
    """The shipped evaluator folder (config.json + model.safetensors)."""
    return Path(str(resources.files("models").joinpath("trained", "evaluator")))


def _as_tensor(images):
    """[N,3,32,32] in [-1,1] from a tensor/array in that layout, an [N,32,32,3] array in [0,1] (or uint8), or PIL
    images."""
    import torch

    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB"), np.float32) / 255.0 for im in images])
    raw = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    # uint8 images (dgq_compiler.sampling.decode) are 0..255: scaled here, so no caller scores a saturated image
    array = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
    if array.ndim != 4:
        raise ModelError(f"expected a batch of images [N,H,W,3] or [N,3,H,W], got shape {array.shape}")
    if array.shape[-1] == 3 and array.shape[1] != 3:  # NHWC in [0, 1] (diffusers output_type="np")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ModelError(f"[N,H,W,3] float images must be in [0, 1] (uint8 for 0..255), got values in "
                             f"[{array.min():g}, {array.max():g}]")
        array = array.transpose(0, 3, 1, 2) * 2.0 - 1.0
    if array.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ModelError(f"the evaluator scores {IMAGE_SIZE}x{IMAGE_SIZE} RGB images, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class Evaluator:
    """A loaded attribute classifier with the alignment and Fréchet-distance scores built on it."""

    def __init__(self, network, config: EvaluatorConfig):
        self.network = network.eval()
        self.config = config
        self.vocab = dict(config.attributes)

    def run(self, images, batch: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Penultimate features [N, F] and predicted class indices per attribute."""
        import torch

        x = _as_tensor(images)
        features, predictions = [], {name: [] for name in self.vocab}
        with torch.no_grad():
            for start in range(0, len(x), batch):
                f, logits = self.network(x[start:start + batch])
                features.append(f.numpy())
                for name, value in logits.items():
                    predictions[name].append(value.argmax(1).numpy())
        return (np.concatenate(features).astype(np.float64),
                {name: np.concatenate(v) for name, v in predictions.items()})

    def predict(self, images) -> list[dict[str, str]]:
        """Each image's recognised attributes, as words."""
        _, predictions = self.run(images)
        return [{name: self.vocab[name][int(predictions[name][i])] for name in self.vocab}
                for i in range(len(next(iter(predictions.values()))))]

    def probabilities(self, images, batch: int = 256) -> dict[str, np.ndarray]:
        """Softmax class probabilities [N, classes] per attribute (the IS-like score's p(y|x))."""
        import torch

        x = _as_tensor(images)
        chunks = {name: [] for name in self.vocab}
        with torch.no_grad():
            for start in range(0, len(x), batch):
                _, logits = self.network(x[start:start + batch])
                for name, value in logits.items():
                    chunks[name].append(torch.softmax(value.double(), dim=1).numpy())
        return {name: np.concatenate(v) for name, v in chunks.items()}

    def alignment(self, images, prompts: list[str], parse=parse_caption) -> "Alignment":
        """Share of the attributes each prompt asks for (`parse(prompt)`) that are recognised in its image."""
        if len(prompts) != len(_as_tensor(images)):
            raise ModelError(f"{len(prompts)} prompts for {len(_as_tensor(images))} images")
        predicted = self.predict(images)
        wanted = [parse(p) for p in prompts]
        hits = {name: [] for name in self.vocab}
        per_image, chance, image_hits = [], [], []
        for asked, seen in zip(wanted, predicted):
            asked = {k: v for k, v in asked.items() if k in self.vocab}
            image_hits.append({k: bool(seen[k] == v) for k, v in asked.items()})
            if not asked:
                continue
            per_image.append(np.mean([seen[k] == v for k, v in asked.items()]))
            chance.append(np.mean([1.0 / len(self.vocab[k]) for k in asked]))
            for k, v in asked.items():
                hits[k].append(seen[k] == v)
        if not per_image:
            raise ModelError("no prompt mentions an attribute the evaluator knows "
                             f"({', '.join(self.vocab)}): cannot score alignment")
        return Alignment(score=float(np.mean(per_image)), chance=float(np.mean(chance)),
                         per_attribute={k: float(np.mean(v)) for k, v in hits.items() if v},
                         images=len(per_image), image_hits=tuple(image_hits))

    def reference_features(self, prompts: list[str], per_prompt: int = 16, seed: int = 0,
                           parse=parse_caption) -> np.ndarray:
        """Features of real rendered scenes matching each prompt (unmentioned attributes drawn at random)."""
        features, _ = self.run(reference_batch(prompts, per_prompt, seed, parse).images)
        return features

    def frechet_distance(self, images, prompts: list[str], per_prompt: int = 16, seed: int = 0,
                         parse=parse_caption) -> float:
        """FD between the images' features and real scenes of the same prompts (deterministic for a seed)."""
        generated, _ = self.run(images)
        return frechet_distance(generated, self.reference_features(prompts, per_prompt, seed, parse))


@dataclass(frozen=True)
class Alignment:
    score: float                      # mean share of prompted attributes recognised
    chance: float                     # the same share for uniform guessing
    per_attribute: dict[str, float]   # recognition rate per attribute over the prompts that ask for it
    images: int
    image_hits: tuple = ()            # per image (all of them, in order): {asked attribute: recognised}


def reference_batch(prompts: list[str], per_prompt: int = 16, seed: int = 0, parse=parse_caption):
    """Real rendered scenes, `per_prompt` for each prompt in order, with what it asks for and the rest drawn at
    random (a `shapes_dataset.Batch`; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for prompt in prompts:
        asked = parse(prompt)
        for _ in range(per_prompt):
            free = sample_scene(rng, heldout=None)
            scenes.append(Scene(**{name: asked.get(name, getattr(free, name)) for name in ATTRIBUTES}))
    return batch_of(scenes, rng)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), with symmetric eigendecompositions."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ModelError(f"Fréchet distance needs two [N>=2, F] feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_term = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + trace_term)


def save_evaluator(network, config: EvaluatorConfig, directory: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    data = {"_class_name": "ShapesAttributeEvaluator", **config.to_json(), **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load_evaluator(directory: str | Path | None = None) -> Evaluator:
    """The evaluator in `directory` (the shipped one by default): JSON config + safetensors weights."""
    from safetensors.torch import load_file

    directory = default_evaluator_dir() if directory is None else Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelError(f"evaluator folder {str(directory)!r} needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"evaluator config {str(config_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("_class_name") != "ShapesAttributeEvaluator":
        raise ModelError(f"{str(config_path)!r} does not describe a ShapesAttributeEvaluator")
    config = EvaluatorConfig.from_json(data)
    network = build_network(config)
    try:
        network.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"evaluator weights {str(weights_path)!r} do not fit its config: "
                         f"{str(exc).splitlines()[0]}") from None
    return Evaluator(network, config)
