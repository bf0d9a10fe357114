import json

import pytest

from models.errors import ModelError
from models.zoo import ZOO_NAMES, read_unet_config, resolve_config, unet_from_config, zoo_config

# Parameter counts of the public UNets (diffusers configs of CompVis/stable-diffusion-v1-4,
# stabilityai/stable-diffusion-2-1 and stable-diffusion-xl-base-1.0).
EXPECTED_PARAMS = {"sd-v1.4": 859_520_964, "sd-v2.1": 865_910_724, "sdxl-base": 2_567_463_684,
                   "sdxl-turbo": 2_567_463_684}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_zoo_architectures_have_the_public_parameter_counts(name):
    unet = unet_from_config(zoo_config(name), device="meta")
    assert sum(p.numel() for p in unet.parameters()) == EXPECTED_PARAMS[name]


def test_tiny_keeps_the_sd_block_structure():
    cfg = zoo_config("tiny")
    assert cfg["down_block_types"][:2] == ["CrossAttnDownBlock2D"] * 2
    assert cfg["up_block_types"][-2:] == ["CrossAttnUpBlock2D"] * 2
    unet = unet_from_config(cfg, device="meta")
    assert type(unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"
    assert sum(p.numel() for p in unet.parameters()) < 3_000_000


def test_sdxl_turbo_differs_from_base_only_in_resolution():
    base, turbo = zoo_config("sdxl-base"), zoo_config("sdxl-turbo")
    assert (base["sample_size"], turbo["sample_size"]) == (128, 64)
    assert {k: v for k, v in base.items() if k != "sample_size"} == {k: v for k, v in turbo.items() if k != "sample_size"}


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ModelError, match=r"unknown model 'sd-v9': expected one of sd-v1.4, .*tiny"):
        zoo_config("sd-v9")


def test_resolve_config_reads_a_user_config_file_and_pipeline_folder(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps(zoo_config("tiny")))
    assert resolve_config(str(tmp_path)) == zoo_config("tiny")
    assert resolve_config(str(tmp_path / "unet" / "config.json"))["cross_attention_dim"] == 32
    assert set(ZOO_NAMES) >= {"sd-v1.4", "tiny"}


def test_a_non_unet_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ModelError, match="is a 'AutoencoderKL', expected a UNet2DConditionModel config"):
        read_unet_config(tmp_path)


def test_malformed_config_json_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="is not valid JSON"):
        read_unet_config(tmp_path / "config.json")


SDXL_LIKE = {"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 16 + 6 * 8, "transformer_layers_per_block": [1, 2, 1],
             "use_linear_projection": True}


@pytest.mark.parametrize("overrides,seed", [({}, 0), ({}, 5), (SDXL_LIKE, 1)])
def test_streamed_random_weights_equal_the_built_model_bit_for_bit(overrides, seed):
    import torch

    from models.zoo import stream_random_weights

    config = dict(zoo_config("tiny"), **overrides)
    got, sizes_seen = {}, []

    def write(index, tensor):
        got[index] = tensor.clone()
        sizes_seen.append(len(got))

    names = stream_random_weights(config, seed, write)
    reference = unet_from_config(config, device="cpu", seed=seed).state_dict()
    assert sorted(names) == sorted(reference)
    assert all(torch.equal(got[i], reference[name]) for i, name in enumerate(names))
    other = unet_from_config(config, device="cpu", seed=seed + 1).state_dict()
    assert not all(torch.equal(got[i], other[name]) for i, name in enumerate(names))


def test_streamed_random_weights_leave_the_global_generator_alone():
    import torch

    from models.zoo import stream_random_weights

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stream_random_weights(zoo_config("tiny"), 0, lambda _i, _t: None)
    assert torch.equal(torch.rand(3), expected)


def test_saved_random_unet_folder_loads_to_the_zoo_weights(tmp_path):
    import torch

    from models.loader import load_unet
    from models.zoo import save_random_unet

    config = dict(zoo_config("tiny"), **SDXL_LIKE)
    save_random_unet(config, 2, tmp_path / "unet")
    loaded = load_unet(tmp_path / "unet").state_dict()
    reference = unet_from_config(config, device="cpu", seed=2).state_dict()
    assert sorted(loaded) == sorted(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert read_unet_config(tmp_path / "unet")["addition_embed_type"] == "text_time"
