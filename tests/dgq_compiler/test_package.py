"""dgq package (optimum's ONNX pipeline layout) and a diffusers pipeline whose UNet is an onnxruntime session."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from tests.random_recipes import random_recipe
from dgq_compiler.package import TOLERANCE, package_pipeline

TIMESTEPS = (901, 501, 101)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset("dgq-w8a8-g8"), TIMESTEPS, seed=0, model_name="tiny")
    out = tmp_path_factory.mktemp("package") / "w8a8"
    compile_graph(tiny_export_dir, recipe, out, progress=lambda _m: None, validate=False)
    return out


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, compiled, tiny_pipeline_dir):
    out = tmp_path_factory.mktemp("package") / "onnx-pipeline"
    report = package_pipeline(compiled, tiny_pipeline_dir, out, progress=lambda _m: None)
    return out, report


def test_package_has_optimums_layout_and_the_compiled_unet_unchanged(packaged, compiled, tiny_pipeline_dir):
    import onnx

    out, report = packaged
    for name in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json",
                 "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
                 "text_encoder/model.onnx", "text_encoder/config.json", "vae_decoder/model.onnx",
                 "vae_decoder/config.json", "unet/model.onnx", "unet/config.json", "package.json"):
        assert (out / name).is_file(), name
    assert (out / "unet" / "model.onnx").read_bytes() == (compiled / "unet.onnx").read_bytes()
    assert (out / "model_index.json").read_bytes() == (tiny_pipeline_dir / "model_index.json").read_bytes()
    names = {row[0]: (row[2], row[3], row[4]) for row in report.components}
    assert names["text_encoder"][:2] == ("input_ids", "last_hidden_state, pooler_output")
    assert names["vae_decoder"][:2] == ("latent_sample", "sample")
    assert names["unet"][:2] == ("sample, timestep, encoder_hidden_states", "out_sample")
    assert 0 <= names["text_encoder"][2] <= TOLERANCE and 0 <= names["vae_decoder"][2] <= TOLERANCE
    for part in ("text_encoder", "vae_decoder", "unet"):
        onnx.checker.check_model(str(out / part / "model.onnx"))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_diffusers_pipeline_with_an_onnxruntime_unet(packaged, tiny_export_dir, tiny_pipeline_dir):
    """The fp32 export behind the wrapper reproduces the torch pipeline (so the wrapper feeds the UNet as the
    pipeline means); the packaged compiled UNet runs the same loop, quantized."""
    import torch

    from dgq_compiler.onnx_pipeline import onnx_unet_pipeline
    from models.loader import load_pipeline

    out, _report = packaged
    kw = dict(num_inference_steps=3, guidance_scale=7.5, output_type="np", height=32, width=32)

    def images(pipe):
        return pipe(["a red circle", "two blue squares"], generator=torch.Generator().manual_seed(0), **kw).images

    reference = images(load_pipeline(tiny_pipeline_dir))
    fp_pipe = onnx_unet_pipeline(tiny_pipeline_dir, tiny_export_dir / "unet.onnx")
    np.testing.assert_allclose(images(fp_pipe), reference, atol=1e-4)
    assert fp_pipe.unet.calls and set(fp_pipe.unet.calls) == {(1,)}  # scalar timesteps fed as [1], like optimum
    quantized = images(onnx_unet_pipeline(tiny_pipeline_dir, out / "unet" / "model.onnx"))
    assert quantized.shape == reference.shape and np.all(np.isfinite(quantized))
    assert np.abs(quantized - reference).max() > 1e-3  # the compiled UNet really ran


def test_cli_refuses_bad_input_with_one_line_and_no_output(tmp_path, compiled, capsys):
    from dgq_compiler.cli.main import main

    assert main(["package", str(tmp_path / "missing"), "-o", str(tmp_path / "a")]) == 2
    assert "compiled graph" in capsys.readouterr().err
    assert main(["package", str(compiled), "--pipeline", str(tmp_path), "-o", str(tmp_path / "b")]) == 2
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    assert main(["package", str(compiled), "--pipeline", "tiny", "-o", str(tmp_path / "c")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
