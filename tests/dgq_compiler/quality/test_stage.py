"""The quality stage on the tiny pipeline's fp32 graph: paired requests, deterministic images and scores, each set
with its own image count."""
import numpy as np
import pytest

from dgq_compiler.errors import DgqError
from dgq_compiler.quality.stage import SEED_STRIDE, QualityOptions, QualityStage, requests

OPTIONS = QualityOptions(images=(4, 3), steps=2, resamples=200, reference_per_prompt=2, check_per_prompt=1)


@pytest.fixture(scope="module")
def stage(tiny_pipeline_dir, tiny_export_dir):
    from dgq_compiler.calibrate.run import open_pipeline, use_pndm

    pipe = open_pipeline(str(tiny_pipeline_dir), device="cpu")
    use_pndm(pipe)
    stage = QualityStage(pipe, OPTIONS)
    stage.score_graph("FP32", tiny_export_dir / "unet.onnx", fp=True)
    stage.score_graph("again", tiny_export_dir / "unet.onnx")
    return stage


def test_requests_cycle_prompts_with_one_seed_per_image_and_set():
    prompts, seeds = requests(("a", "b", "c"), 5, seed=10, set_index=1)
    assert prompts == ["a", "b", "c", "a", "b"]
    assert seeds == [10 + SEED_STRIDE + i for i in range(5)]


def test_the_same_graph_twice_gives_the_same_images_and_scores(stage):
    for name, count in (("heldout", 4), ("rephrased", 3)):
        first, second = stage.images["FP32"][name], stage.images["again"][name]
        assert first.shape == (count, 32, 32, 3) and first.dtype == np.uint8
        assert np.array_equal(first, second) and first.std() > 0
        assert stage.scores["FP32"][name].to_json() == stage.scores["again"][name].to_json()
        versus = stage.versus_fp("again", name)
        assert not any(v["separates"] or v["paired_differs"] for v in versus.values())


def test_the_two_sets_get_different_prompts_and_noise(stage):
    heldout, rephrased = stage.images["FP32"]["heldout"], stage.images["FP32"]["rephrased"]
    assert not np.array_equal(heldout[:3], rephrased)
    assert stage.requests["heldout"][0][0] != stage.requests["rephrased"][0][0]


def test_json_carries_every_row_set_and_interval(stage):
    doc = stage.to_json()
    assert doc["fp"] == "FP32" and list(doc["configs"]) == ["FP32", "again"]
    assert "versus_fp" not in doc["configs"]["FP32"]["heldout"]
    row = doc["configs"]["again"]["rephrased"]
    for metric in ("alignment", "frechet", "is_like"):
        assert row[metric]["low"] <= row[metric]["value"] <= row[metric]["high"]
        assert row["versus_fp"][metric]["paired_delta"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert doc["evaluator_check"]["passed"]
    assert doc["real"]["heldout"]["alignment"]["value"] == 1.0
    assert doc["sets"]["heldout"]["images"] == 4 and doc["sets"]["rephrased"]["images"] == 3
    assert stage.indices["heldout"].shape == (200, 4) and stage.indices["rephrased"].shape == (200, 3)


def test_too_few_images_and_wrong_image_sizes_are_named(stage):
    for bad in (1, (4, 1), (4, 4, 4), ()):
        with pytest.raises(DgqError, match="--images must be one count of at least 2"):
            QualityOptions(images=bad)
    with pytest.raises(DgqError, match=r"one per prompt set \(heldout\), got 4,8"):
        QualityOptions(images=(4, 8), sets=("heldout",))
    assert QualityOptions(images=(5,)).images == 5 and QualityOptions(images=[4, 8]).images == (4, 8)
    assert QualityOptions().count("heldout") == 32 and QualityOptions().count("rephrased") == 64
    with pytest.raises(DgqError, match="scores 32x32 images; this pipeline makes 64x64"):
        QualityStage(stage.pipe, QualityOptions(images=4, latent_size=32))
