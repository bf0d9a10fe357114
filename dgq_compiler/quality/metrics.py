"""One configuration's images on one prompt set, scored by the shapes evaluator, each metric with its interval.

- alignment: the share of each prompt's attributes the evaluator recognises in its image (CLIP-score
  analogue), overall and per attribute; bootstrap intervals;
- Fréchet distance between the images' evaluator features and real rendered scenes of the same prompts
  (FID analogue; the reference features are fixed); jackknife interval;
- IS-like: exp of the mean, over the evaluator's attribute heads, of E_x KL(p(y|x) || p(y)), i.e. the
  geometric mean of per-attribute Inception Scores (1 = uninformative, at most the number of classes);
  jackknife interval. (`intervals` says why the two plug-in statistics are not bootstrapped.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dgq_compiler.quality.intervals import (LEVEL, Interval, jackknife_interval, leave_one_out, mean_interval,
                                            percentile_interval)

METRICS = ("alignment", "frechet", "is_like")
HIGHER_IS_BETTER = {"alignment": True, "frechet": False, "is_like": True}
INTERVAL_METHOD = {"alignment": "bootstrap", "frechet": "jackknife", "is_like": "jackknife"}


@dataclass
class SetScore:
    """Scores of one image set; `replicates` (metric -> bootstrap replicates or leave-one-out values) stay in
    memory for paired differences."""
    alignment: Interval
    per_attribute: dict
    frechet: Interval
    is_like: Interval
    chance: float
    images: int
    replicates: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"alignment": self.alignment.to_json(), "frechet": self.frechet.to_json(),
                "is_like": self.is_like.to_json(), "chance": self.chance, "images": self.images,
                "per_attribute": {k: v.to_json() for k, v in self.per_attribute.items()}}

    def metric(self, name: str) -> Interval:
        return getattr(self, name)


def is_like_score(probabilities: dict[str, np.ndarray]) -> float:
    """exp(mean over heads of E_x KL(p(y|x) || p(y))) for [N, classes] probabilities per head."""
    kls = []
    for p in probabilities.values():
        p = np.clip(p, 1e-12, 1.0)
        marginal = p.mean(axis=0, keepdims=True)
        kls.append(float(np.sum(p * (np.log(p) - np.log(marginal)), axis=1).mean()))
    return float(np.exp(np.mean(kls)))


def score_set(evaluator, images, prompts: list[str], parse, reference: np.ndarray, indices: np.ndarray,
              level: float = LEVEL) -> SetScore:
    """Alignment (+ per attribute; bootstrap over the resamples `indices` [B, len(images)]), Fréchet distance
    against `reference` features and IS-like (jackknife)."""
    from models.evaluator import frechet_distance

    aligned = evaluator.alignment(images, prompts, parse=parse)
    per_image = np.array([np.mean(list(h.values())) if h else np.nan for h in aligned.image_hits])
    alignment, alignment_reps = mean_interval(per_image, indices, level)
    per_attribute = {}
    for name in aligned.per_attribute:
        hits = np.array([float(h[name]) if name in h else np.nan for h in aligned.image_hits])
        per_attribute[name], _ = mean_interval(hits, indices, level)

    features, _ = evaluator.run(images)
    fd_loo = leave_one_out(lambda f: frechet_distance(f, reference), features)
    frechet = jackknife_interval(frechet_distance(features, reference), fd_loo, level, bounds=(0.0, np.inf))

    probabilities = evaluator.probabilities(images)
    stacked = np.concatenate(list(probabilities.values()), axis=1)           # heads side by side, rows = images
    widths = np.cumsum([p.shape[1] for p in probabilities.values()])[:-1]

    def is_like_rows(rows: np.ndarray) -> float:
        return is_like_score(dict(zip(probabilities, np.split(rows, widths, axis=1))))

    is_loo = leave_one_out(is_like_rows, stacked)
    is_like = jackknife_interval(is_like_score(probabilities), is_loo, level, bounds=(1.0, np.inf))
    return SetScore(alignment, per_attribute, frechet, is_like, aligned.chance, len(per_image),
                    {"alignment": alignment_reps, "frechet": fd_loo, "is_like": is_loo})


def paired_difference(score: SetScore, baseline: SetScore, metric: str, level: float = LEVEL) -> Interval:
    """score - baseline for `metric`, its interval from the paired replicates: the same bootstrap resamples of
    both (alignment) or the same image left out of both (jackknife)."""
    delta_value = score.metric(metric).value - baseline.metric(metric).value
    delta = score.replicates[metric] - baseline.replicates[metric]
    if INTERVAL_METHOD[metric] == "bootstrap":
        return percentile_interval(delta_value, delta, level)
    return jackknife_interval(delta_value, delta, level)
