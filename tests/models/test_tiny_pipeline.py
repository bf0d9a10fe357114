import hashlib

import numpy as np
import pytest
import torch

from models.loader import load_pipeline
from models.tiny_pipeline import build_tiny_pipeline


def _generate(pipe, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = pipe(["a red bicycle leaning against a brick wall", "a dog running on a sandy beach"],
               num_inference_steps=25, guidance_scale=7.5, generator=gen, output_type="np")
    return out.images


def test_same_seed_builds_identical_weights_and_other_seeds_differ():
    a, b, c = (build_tiny_pipeline(s).unet.state_dict() for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_round_trip_through_from_pretrained_generates_the_same_bytes(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    first, second = _generate(pipe), _generate(pipe)
    assert first.shape == (2, 32, 32, 3)
    assert hashlib.sha256(first.tobytes()).digest() == hashlib.sha256(second.tobytes()).digest()
    fresh = build_tiny_pipeline(0)
    fresh.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_generate(fresh), first)
    assert not np.array_equal(_generate(pipe, seed=1), first)


def test_saved_folder_is_safetensors_only(tiny_pipeline_dir):
    files = {p.name for p in tiny_pipeline_dir.rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pkl", ".ckpt")) for name in files)


def test_tokenizer_and_text_encoder_agree_on_77_tokens(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    ids = pipe.tokenizer(["a cat"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        states = pipe.text_encoder(ids)[0]
    assert tuple(states.shape) == (1, 77, pipe.unet.config.cross_attention_dim)
    assert pytest.approx(pipe.vae_scale_factor) == 2
