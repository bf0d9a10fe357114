"""The training script: a shortened schedule is byte-reproducible, and it never clobbers a folder."""
from __future__ import annotations

import hashlib
import json

import pytest

from models.errors import ModelError
from models.train_shapes import PREDICTION, V_FLOOR, loss_weights, main, train

SHORT = dict(seed=3, vae_steps=2, unet_steps=2, batch=4, pool_size=16, threads=1, quiet=True, text_steps=2,
             text_batch=8)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_weights_and_another_seed_does_not(tmp_path):
    a, b, _ = (train(tmp_path / name, **{**SHORT, "seed": seed}) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    first, second, other = (_digests(tmp_path / name) for name in "abc")
    assert "unet/diffusion_pytorch_model.safetensors" in first
    assert first == second and a["final_diffusion_loss"] == b["final_diffusion_loss"]
    assert first["unet/diffusion_pytorch_model.safetensors"] != other["unet/diffusion_pytorch_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # the three text encoders (bag of words by default, grounded, trained jointly) differ; the VAE before them does not
    for text in ("grounded", "joint"):
        train(tmp_path / text, **{**SHORT, "text": text})
        other = _digests(tmp_path / text)
        assert other["text_encoder/model.safetensors"] != first["text_encoder/model.safetensors"], text
        assert other["vae/diffusion_pytorch_model.safetensors"] == first["vae/diffusion_pytorch_model.safetensors"]
    with pytest.raises(ModelError, match="text encoder 'clip'"):
        train(tmp_path / "clip", **{**SHORT, "text": "clip"})


def _prediction_type(folder):
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]


def test_the_saved_scheduler_reads_the_unet_as_it_was_trained_and_unknown_objectives_are_refused(tmp_path):
    train(tmp_path / "eps", **SHORT)
    train(tmp_path / "v", **SHORT, prediction="v_prediction")
    assert PREDICTION == "epsilon" and _prediction_type(tmp_path / "eps") == "epsilon"
    assert _prediction_type(tmp_path / "v") == "v_prediction"
    assert _digests(tmp_path / "v")["unet/diffusion_pytorch_model.safetensors"] != \
        _digests(tmp_path / "eps")["unet/diffusion_pytorch_model.safetensors"]
    with pytest.raises(ModelError, match="prediction 'sample' is not one of epsilon, v_prediction"):
        train(tmp_path / "x0", **SHORT, prediction="sample")
    assert not (tmp_path / "x0").exists()


def test_v_loss_keeps_the_high_noise_steps_that_epsilon_loss_neglects():
    import torch
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           num_train_timesteps=1000).alphas_cumprod
    snr = alphas / (1 - alphas)
    # in units of the clean-image error: epsilon error = SNR x it, v error = (SNR + 1) x it
    clean_v = loss_weights(alphas, "v_prediction") * (snr + 1)
    clean_eps = loss_weights(alphas, "epsilon") * snr
    torch.testing.assert_close(clean_v, torch.clamp(snr, max=5.0) + V_FLOOR)
    torch.testing.assert_close(clean_eps, torch.clamp(snr, max=5.0))
    assert V_FLOOR >= 0.1 and clean_v.min() >= V_FLOOR and clean_eps[-1] < 0.01  # the noisiest step: v keeps it
    torch.testing.assert_close(clean_v[:100], clean_eps[:100] + V_FLOOR)  # low noise: both capped by Min-SNR-5


def test_existing_output_is_refused_before_training_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists"):
        train(out, **SHORT)
    assert main(["--out", str(out), "--vae-steps", "1", "--unet-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    train(out, **SHORT, overwrite=True)
    assert (out / "unet").is_dir() and not (out / "keep.txt").exists()
