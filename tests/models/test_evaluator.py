"""The shipped shapes evaluator: accurate on fresh scenes, alignment and Fréchet distance that discriminate."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models import ModelError
from models import shapes_dataset as ds
from models.evaluator import frechet_distance, load_evaluator


@pytest.fixture(scope="module")
def evaluator():
    return load_evaluator()


@pytest.fixture(scope="module")
def fresh():
    """Scenes from a seed neither training nor the reported accuracy used."""
    return ds.render_batch(np.random.default_rng(2024), 384, heldout=None)


def test_accuracy_on_fresh_scenes(evaluator, fresh):
    _, predicted = evaluator.run(fresh.images)
    accuracy = {k: float((predicted[k] == fresh.labels[k]).mean()) for k in ds.ATTRIBUTES}
    assert min(accuracy.values()) > 0.85, accuracy
    assert np.mean(list(accuracy.values())) > 0.93, accuracy


def test_alignment_matches_own_captions_and_not_shuffled_ones(evaluator, fresh):
    images, captions = fresh.images[:128], fresh.captions[:128]
    own = evaluator.alignment(images, captions)
    rolled = evaluator.alignment(images, captions[1:] + captions[:1])
    assert own.score > 0.9 and rolled.score < 0.6, (own, rolled)
    # Chance is the mean of 1/classes over the attributes each caption asks for.
    assert 0.25 < own.chance < 0.40
    # Works on diffusers' [N, H, W, 3] output in [0, 1] too.
    nhwc = (images.transpose(0, 2, 3, 1) + 1) / 2
    assert evaluator.alignment(nhwc, captions).score == own.score


def test_frechet_distance_separates_matching_from_mismatched_scenes(evaluator):
    prompts = ["a large red circle on the left on a white background",
               "three small blue squares at the top on a black background"]
    real = evaluator.reference_features(prompts, per_prompt=48, seed=1)
    matching = evaluator.reference_features(prompts, per_prompt=48, seed=2)  # same prompts, other draws
    other = evaluator.reference_features(["two big green triangles on the right on a gray background",
                                          "a small yellow cross in the center on a white background"],
                                         per_prompt=48, seed=2)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-3)  # eigen round-off only
    assert frechet_distance(real, matching) * 5 < frechet_distance(real, other)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    b = rng.normal(0, 2, (20000, 3)) + np.array([1.0, 0, 0])
    # |mu|^2 + sum (1 + 4 - 2*2) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="needs config.json"):
        load_evaluator(tmp_path)
    from models.trained import trained_evaluator_dir

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Something"}))
    (tmp_path / "model.safetensors").write_bytes((trained_evaluator_dir() / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="ShapesAttributeEvaluator"):
        load_evaluator(tmp_path)
    config = json.loads((trained_evaluator_dir() / "config.json").read_text())
    config["feature_dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit its config"):
        load_evaluator(tmp_path)


def test_uint8_images_score_as_their_float_values_and_out_of_range_floats_are_refused(evaluator, fresh):
    """sampling.decode gives uint8 0..255: scored as the same [0, 1] image, never as a saturated one."""
    images, captions = fresh.images[:32], fresh.captions[:32]
    as_uint8 = np.round((images.transpose(0, 2, 3, 1) + 1.0) * 127.5).astype(np.uint8)  # NCHW [-1, 1] -> NHWC uint8
    assert evaluator.alignment(as_uint8, captions).score == evaluator.alignment(as_uint8 / 255.0, captions).score
    assert evaluator.alignment(as_uint8, captions).score > 0.9
    with pytest.raises(ModelError, match=r"float images must be in \[0, 1\] \(uint8 for 0..255\)"):
        evaluator.alignment(as_uint8.astype(np.float32), captions)
