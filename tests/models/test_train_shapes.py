"""The training script: a shortened schedule is byte-reproducible, and it never clobbers a folder."""
from __future__ import annotations

import hashlib

import pytest

from models.errors import ModelError
from models.train_shapes import main, train

SHORT = dict(seed=3, vae_steps=2, unet_steps=2, batch=4, pool_size=16, threads=1, quiet=True)


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
