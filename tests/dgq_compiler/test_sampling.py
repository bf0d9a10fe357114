import numpy as np
import pytest

from dgq_compiler.sampling import decode, initial_latents, onnx_predictor, sample, torch_predictor
from models.loader import load_pipeline

PROMPTS = ["a red bicycle leaning against a brick wall", "a dog running on a sandy beach"]


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir)


def test_latents_depend_on_the_seed_not_the_batch(pipe):
    together = initial_latents(pipe, [3, 4])
    np.testing.assert_array_equal(together[1], initial_latents(pipe, [4])[0])
    assert not np.array_equal(together[0], together[1])


def test_torch_and_onnx_loops_agree_and_see_every_step(pipe, tiny_export_dir):
    calls = []
    fp = sample(pipe, torch_predictor(pipe.unet), PROMPTS, [0, 1], steps=5,
                on_step=lambda i, t, x, states, eps: calls.append((i, t, x.shape, states.shape)))
    assert [c[0] for c in calls] == list(range(len(calls))) and len(calls) >= 5
    assert calls[0][2] == (4, 4, 16, 16) and calls[0][3] == (4, 77, 32)  # uncond + cond in one batch
    ort = sample(pipe, onnx_predictor(tiny_export_dir / "unet.onnx"), PROMPTS, [0, 1], steps=5)
    np.testing.assert_allclose(ort, fp, atol=1e-3)
    images = decode(pipe, fp)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_guidance_changes_the_result(pipe):
    unet = torch_predictor(pipe.unet)
    a = sample(pipe, unet, PROMPTS[:1], [0], steps=3, guidance=1.0)
    b = sample(pipe, unet, PROMPTS[:1], [0], steps=3, guidance=7.5)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, sample(pipe, unet, PROMPTS[:1], [0], steps=3, guidance=1.0))
