"""The embedded tiny text-to-image pipeline: built offline and deterministically from a seed.

Every component has Stable Diffusion's layout (CLIP text encoder, the project's CLIP-style
tokenizer, UNet2DConditionModel with cross-attention, AutoencoderKL, PNDM), scaled down so a
25-step sample at batch 2 takes seconds on a CPU.
"""
from __future__ import annotations

from models.tokenizer import MAX_LENGTH, build_tokenizer
from models.zoo import zoo_config

TEXT_WIDTH = 32


def pndm_scheduler(prediction_type: str = "epsilon"):
    """PNDM with Stable Diffusion 1.x's noise schedule; `prediction_type` says what the UNet predicts ("epsilon" as
    SD 1.x, "v_prediction" as SD 2.x-768), so every scheduler made from this config reads its output right."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                         steps_offset=1, prediction_type=prediction_type)


def build_tiny_pipeline(seed: int = 0):
    """A random-weight StableDiffusionPipeline; the same seed gives the same weights, bit for bit."""
    import torch

    from models.libraries import quiet_libraries

    quiet_libraries()
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer()
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=TEXT_WIDTH)).eval()
        unet = UNet2DConditionModel.from_config(zoo_config("tiny")).eval()
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                            block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                            sample_size=32).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=pndm_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def save_tiny_pipeline(path, seed: int = 0) -> None:
    """Write the embedded pipeline as a diffusers folder (safetensors), loadable with `from_pretrained`, with the
    tokenizer files every CLIP tokenizer loader reads (transformers 4.x too)."""
    from pathlib import Path

    from models.tokenizer import write_legacy_files

    build_tiny_pipeline(seed).save_pretrained(str(path), safe_serialization=True)
    write_legacy_files(Path(path) / "tokenizer")
