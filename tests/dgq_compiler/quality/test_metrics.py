"""Scores of planted image sets: real rendered scenes score as real scenes should, mismatches score worse."""
import numpy as np
import pytest

from dgq_compiler.quality.intervals import resample_indices
from dgq_compiler.quality.metrics import is_like_score, paired_difference, score_set
from models.evaluator import load_evaluator, reference_batch
from models.prompt_sets import load_prompt_set, parse_prompt


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator()


@pytest.fixture(scope="module")
def planted(evaluator):
    prompts = list(load_prompt_set("rephrased").prompts)
    reference = evaluator.reference_features(prompts, 8, seed=1, parse=parse_prompt)
    real = reference_batch(prompts, 1, seed=2, parse=parse_prompt).images
    indices = resample_indices(len(prompts), 300, seed=0)
    return prompts, reference, real, indices


def test_real_scenes_align_fully_and_sit_close_to_the_reference(evaluator, planted):
    prompts, reference, real, indices = planted
    own = score_set(evaluator, real, prompts, parse_prompt, reference, indices)
    shifted = score_set(evaluator, real, prompts[5:] + prompts[:5], parse_prompt, reference, indices)
    assert own.alignment.value == 1.0 and own.images == len(prompts)
    assert shifted.alignment.high < own.alignment.low  # images scored against other prompts: separated
    assert set(own.per_attribute) == {"shape", "colour", "size", "position", "count", "background"}
    assert own.frechet.low <= own.frechet.value <= own.frechet.high
    blank = np.zeros_like(real)  # flat grey images: far from every real scene
    flat = score_set(evaluator, blank, prompts, parse_prompt, reference, indices)
    assert flat.frechet.low > own.frechet.high
    assert flat.alignment.value < 0.5
    assert flat.is_like.value == pytest.approx(1.0, abs=1e-6)  # identical images: no information
    assert own.is_like.low > 1.5


def test_paired_difference_of_a_set_with_itself_is_exactly_zero(evaluator, planted):
    prompts, reference, real, indices = planted
    a = score_set(evaluator, real, prompts, parse_prompt, reference, indices)
    b = score_set(evaluator, real.copy(), prompts, parse_prompt, reference, indices)
    for metric in ("alignment", "frechet", "is_like"):
        delta = paired_difference(a, b, metric)
        assert (delta.value, delta.low, delta.high) == (0.0, 0.0, 0.0)
        assert not a.metric(metric).separates_from(b.metric(metric))


def test_is_like_of_known_distributions():
    confident = {"h": np.eye(4)[np.arange(40) % 4]}            # one-hot, uniform marginal: IS = 4 classes
    assert is_like_score(confident) == pytest.approx(4.0, rel=1e-6)
    assert is_like_score({"h": np.full((40, 4), 0.25)}) == pytest.approx(1.0)
    two_heads = {"a": confident["h"], "b": np.full((40, 9), 1 / 9)}
    assert is_like_score(two_heads) == pytest.approx(2.0, rel=1e-6)  # geometric mean of 4 and 1
