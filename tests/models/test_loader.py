import json
import shutil

import pytest

from models.errors import ModelError
from models.loader import folder_kind, get_unet, load_pipeline, load_unet


def test_loads_a_unet_alone_and_from_a_pipeline(tiny_pipeline_dir):
    from_pipeline = load_unet(tiny_pipeline_dir)
    from_folder = load_unet(tiny_pipeline_dir / "unet")
    assert folder_kind(tiny_pipeline_dir) == "pipeline" and folder_kind(tiny_pipeline_dir / "unet") == "unet"
    assert type(from_folder).__name__ == "UNet2DConditionModel"
    sd_a, sd_b = from_pipeline.state_dict(), from_folder.state_dict()
    assert all((sd_a[k] == sd_b[k]).all() for k in sd_a)


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match=r"model folder '.*nowhere' does not exist"):
        load_unet(tmp_path / "nowhere")


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ModelError, match="is not a folder"):
        load_unet(tmp_path / "x.txt")


def test_folder_without_configs(tmp_path):
    with pytest.raises(ModelError, match="has neither model_index.json .* nor config.json"):
        load_unet(tmp_path)


def test_pipeline_missing_a_component(tmp_path, tiny_pipeline_dir):
    copy = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, copy)
    shutil.rmtree(copy / "vae")
    with pytest.raises(ModelError, match="is missing its vae/ folder"):
        load_pipeline(copy)


def test_unet_missing_weights(tmp_path, tiny_pipeline_dir):
    copy = tmp_path / "unet"
    shutil.copytree(tiny_pipeline_dir / "unet", copy)
    (copy / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing diffusion_pytorch_model.safetensors"):
        load_unet(copy)


def test_truncated_weights(tmp_path, tiny_pipeline_dir):
    copy = tmp_path / "unet"
    shutil.copytree(tiny_pipeline_dir / "unet", copy)
    weights = copy / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load the UNet from"):
        load_unet(copy)


def test_non_unet_model_folder(tiny_pipeline_dir):
    with pytest.raises(ModelError, match="holds a 'AutoencoderKL', expected a UNet2DConditionModel"):
        load_unet(tiny_pipeline_dir / "vae")


def test_malformed_config(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2")
    with pytest.raises(ModelError, match="is not valid JSON"):
        load_unet(tmp_path)


def test_unet_folder_is_not_a_pipeline(tiny_pipeline_dir):
    with pytest.raises(ModelError, match="is a UNet alone"):
        load_pipeline(tiny_pipeline_dir / "unet")


def test_get_unet_by_name_and_unknown_name():
    assert get_unet("tiny").config.cross_attention_dim == 32
    with pytest.raises(ModelError, match="unknown model 'sd-v7'"):
        get_unet("sd-v7")
    assert json.loads(json.dumps(dict(get_unet("tiny", seed=3).config)))["sample_size"] == 16


def test_tiny_by_name_is_the_embedded_pipelines_unet():
    from models.tiny_pipeline import build_tiny_pipeline

    by_name, in_pipeline = get_unet("tiny", seed=2).state_dict(), build_tiny_pipeline(2).unet.state_dict()
    assert all((by_name[k] == in_pipeline[k]).all() for k in by_name)
