"""Random-weight diffusers pipelines at real UNet size, built offline for the scale benchmarks.

    python benchmarks/scale_pipelines.py sdxl-base OUT_DIR     # StableDiffusionXLPipeline folder
    python benchmarks/scale_pipelines.py sd-v1.4 OUT_DIR       # StableDiffusionPipeline folder

The UNet is the zoo architecture with the zoo's seeded weights (`dgq export <zoo name>` exports the same
weights), written tensor by tensor, so building an SDXL folder needs about one layer of memory. The text
encoders have the real widths the UNet needs (SD: 768; SDXL: 768 + 1280 hidden states and a 1280-wide
pooled projection, so `text_embeds` + 6 x 256 time ids = 2816) but a single layer; the VAE is small
(2 blocks, scale factor 2). The tokenizer is the project's own (models/tokenizer.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

TEXT_WIDTHS = {"sd-v1.4": (768,), "sdxl-base": (768, 1280), "sdxl-turbo": (768, 1280)}


def _text_encoder(width: int, vocab: int, tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from models.tokenizer import MAX_LENGTH

    config = CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=256, num_hidden_layers=1,
                            num_attention_heads=width // 64, max_position_embeddings=MAX_LENGTH,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=width)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def build_pipeline_folder(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a random-weight pipeline of zoo architecture `name` to `folder` (which must not exist)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler

    from models.loader import quiet_libraries
    from models.tokenizer import build_tokenizer
    from models.zoo import save_random_unet, zoo_config

    quiet_libraries()
    folder = Path(folder)
    if folder.exists():
        raise SystemExit(f"{folder} exists")
    tmp = folder.with_name(folder.name + ".partial")
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    widths = TEXT_WIDTHS[name]
    encoders = [_text_encoder(w, len(tokenizer), tokenizer, projection=(k == 1)) for k, w in enumerate(widths)]
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                        sample_size=64).eval()
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    if len(widths) == 1:
        from diffusers import StableDiffusionPipeline

        parts = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=tokenizer, unet=None,
                                        scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                        requires_safety_checker=False)
    else:
        from diffusers import StableDiffusionXLPipeline

        parts = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                          tokenizer=tokenizer, tokenizer_2=tokenizer, unet=None,
                                          scheduler=scheduler, add_watermarker=False)
    parts.save_pretrained(str(tmp), safe_serialization=True)
    index = (tmp / "model_index.json").read_text(encoding="utf-8")
    # the UNet is written apart (tensor by tensor); the index must name it like save_pretrained would
    index = index.replace('"unet": [\n    null,\n    null\n  ]', '"unet": [\n    "diffusers",\n    "UNet2DConditionModel"\n  ]')
    (tmp / "model_index.json").write_text(index, encoding="utf-8")
    save_random_unet(zoo_config(name), seed, tmp / "unet")
    tmp.rename(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(TEXT_WIDTHS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="UNet weights: the zoo's for this seed")
    args = parser.parse_args()
    print(build_pipeline_folder(args.model, args.folder, args.seed))


if __name__ == "__main__":
    main()
