"""Is the evaluator still to be trusted? Its accuracy per attribute on freshly rendered scenes of the prompt sets.

Every quality stage runs this check before it believes the evaluator's scores, and the report states the
result: a retrained model, evaluator or prompt set that the classifier no longer reads shows up here.
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.85       # every attribute; a broken or mismatched evaluator falls far below (chance <= 0.5)
CHECK_SEED = 20261127  # a seed neither the evaluator's training nor the Fréchet references use


def attribute_accuracy(evaluator, batch) -> dict[str, float]:
    """Share of correctly recognised labels per attribute on a rendered `shapes_dataset.Batch`."""
    _, predicted = evaluator.run(batch.images)
    return {name: float(np.mean(predicted[name] == batch.labels[name])) for name in evaluator.vocab}


def check_evaluator(evaluator, prompt_sets, per_prompt: int = 4, seed: int = CHECK_SEED,
                    threshold: float = THRESHOLD) -> dict:
    """Accuracy per attribute on `per_prompt` fresh scenes of every prompt of every set (attributes a prompt
    leaves open drawn at random); passed when each attribute reaches `threshold`."""
    from models.evaluator import reference_batch
    from models.prompt_sets import parse_prompt

    prompts = [p for s in prompt_sets for p in s.prompts]
    batch = reference_batch(prompts, per_prompt, seed, parse_prompt)
    accuracy = attribute_accuracy(evaluator, batch)
    return {"accuracy": accuracy, "threshold": threshold, "scenes": len(batch.scenes), "seed": seed,
            "passed": all(a >= threshold for a in accuracy.values())}
