"""Train the embedded shapes text-to-image model: a Stable-Diffusion-shaped pipeline, from scratch, on CPU.

    python -m models.train_shapes --out DIR --seed 0

Stage 1 trains a small AutoencoderKL (32x32x3 <-> 4x16x16, factor 2) on rendered scenes; its
latent scale (SD's 0.18215) is measured, not assumed. The text encoder is frozen during stage 2, as SD's CLIP is:
by default (`--text bag`) it is the fixed bag-of-words encoder of models/text_bag.py; `--text grounded` pretrains it
with attribute heads (models/train_text.py, `--text-steps` steps) instead, and `--text joint` trains it together
with the UNet, as the weights shipped before it did. Stage 2 trains the UNet
on those latents with SD 1.x's recipe: epsilon prediction (`--prediction v_prediction`
gives SD 2.x's; the saved scheduler config says which), the scaled-linear 0.00085..0.012 schedule over
1000 steps, 10% empty captions for classifier-free guidance, an EMA of the weights. Everything is drawn from `--seed` (numpy for scenes/captions, torch generators for
init and noise), and the result is saved with `save_pretrained(safe_serialization=True)`.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from models.shapes_dataset import IMAGE_SIZE, caption, render_batch, vocabulary
from models.tokenizer import MAX_LENGTH, build_tokenizer, write_legacy_files
from models.text_bag import make_bag_of_words
from models.train_text import lr_schedule, train_text
from models.training_cli import run_training, training_parser

TEXT_WIDTH = 64
LATENT_SIZE = IMAGE_SIZE // 2
VAE_CHANNELS = (24, 48)
# Training captions: size, position and background each left out 5% of the time (the evaluated prompts state
# them all), the colour word and the shape noun each 10% (so each alone carries its attribute: see caption()).
OMIT_RATE = 0.05
OMIT_IDENTITY_RATE = 0.1
UNCOND_RATE = 0.1  # empty captions, for classifier-free guidance
DIFFUSION_LR = 1e-3  # peak, after 200 warm-up steps; cosine decay to 10%
# The latents' standard deviation (SD's 0.18215 makes it 1). Half of it lowers the signal-to-noise ratio at every
# timestep 4x (Chen 2023, "On the importance of noise scheduling"): with unit-variance 16x16 latents, SD's schedule
# leaves enough signal at its first sampling steps (SNR 0.007 per value, ~1 summed over an object) for a model to
# read where objects go from the initial noise instead of the words. Measured at 2200 steps: 0.5 still places
# objects by seed (as 1.0 did), and 0.35 with twice the learning rate scored worse on colour and background.
LATENT_STD = 0.5
# What the UNet predicts; the shipped weights are epsilon's (SD 1.x). Epsilon loss scores the clean image at high
# noise only through sqrt(alpha_bar) (0.07 at SD's first sampling step), so it barely rewards reading the words
# where layout and colour are decided: the epsilon model places objects by the seed noise. v-prediction (SD 2.x-768)
# asks for the clean image there. Measured (seed 0, 2200 steps, held-out 64 images, guidance 7.5): v raised colour
# 0.62 -> 0.80, position 0.23 -> 0.44 and alignment 0.685 -> 0.742, but shape fell 0.53 -> 0.23 and the Fréchet
# distance rose 777 -> 1329, and positions still mostly follow the seed; so epsilon stays the default. With
# V_FLOOR 0.2 the position words fell back to epsilon's (text states 0.022 apart, benchmarks/shapes_quality.py
# --conditioning-check; 0.087 at 1.0, 0.041 for epsilon) and shape stayed low (0.19).
PREDICTION = "epsilon"
PREDICTIONS = ("epsilon", "v_prediction")
# How the text encoder is made (module docstring). Measured (seed 0, 2200 UNet steps, 64 held-out images, guidance 3;
# benchmarks/shapes_quality.py): bag 0.971 held-out alignment, every attribute >= 0.86, Fréchet distance 122;
# joint 0.685 (guidance 7.5, its best), position 0.23, Fréchet 777; grounded 0.682, colour 0.23, Fréchet 1086.
TEXT_ENCODERS = ("bag", "grounded", "joint")
TEXT_ENCODER = "bag"
MIN_SNR = 5.0
V_FLOOR = 1.0  # v's clean-image weight at the noisiest steps (see loss_weights)


def unet_config() -> dict:
    """Stable Diffusion's UNet2DConditionModel with cross-attention, scaled down, in SDXL's arrangement: plain
    ResNet blocks at the full 16x16 latent resolution, cross-attention in the down and up blocks at 8x8 and 4x4
    and in the mid block. Attention where the maps are coarse is where a pixel can know where it is (through the
    zero padding), which placing objects by the words needs; leaving out the 16x16 attention is also ~20%
    cheaper per training step on a CPU, and two heads per block (small head dimensions run slowly) another ~20%.
    (Measured: this model still places objects by the initial noise, as the earlier layout did.)"""
    return {"sample_size": LATENT_SIZE, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
            "block_out_channels": [32, 64, 128], "attention_head_dim": 2, "norm_num_groups": 8,
            "cross_attention_dim": TEXT_WIDTH, "act_fn": "silu", "flip_sin_to_cos": True, "freq_shift": 0,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}


def build_components(seed: int):
    """Freshly initialised tokenizer, text encoder, UNet and VAE (the init is drawn from `seed`)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(vocabulary())
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=TEXT_WIDTH))
    unet = UNet2DConditionModel.from_config(unet_config())
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        block_out_channels=VAE_CHANNELS, layers_per_block=1, norm_num_groups=8,
                        sample_size=IMAGE_SIZE, mid_block_add_attention=False)
    return tokenizer, text_encoder, unet, vae


def train_vae(vae, rng: np.random.Generator, steps: int, batch: int, log) -> float:
    """Reconstruction (MSE) + a light KL term; returns the final mean-squared reconstruction error."""
    import torch

    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    vae.train()
    recent = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step, steps, 3e-3, 50)
        images = torch.from_numpy(render_batch(rng, batch, heldout=False).images)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        mse = (recon - images).pow(2).mean()
        kl = posterior.kl().mean() / images[0].numel()
        loss = mse + 1e-3 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = (recent + [mse.item()])[-50:]
        log(step, steps, f"vae mse {np.mean(recent):.4f}")
    vae.eval()
    return float(np.mean(recent))


def encode_pool(vae, rng: np.random.Generator, size: int, chunk: int = 256):
    """Scenes (training combinations only) with their VAE posterior mean and std, encoded once."""
    import torch

    scenes, means, stds = [], [], []
    with torch.no_grad():
        for start in range(0, size, chunk):
            batch = render_batch(rng, min(chunk, size - start), heldout=False)
            dist = vae.encode(torch.from_numpy(batch.images)).latent_dist
            scenes += batch.scenes
            means.append(dist.mean)
            stds.append(dist.std)
    return scenes, torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, captions: list[str]):
    return tokenizer(captions, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                     return_tensors="pt").input_ids


def loss_weights(alphas_cumprod, prediction: str):
    """Per-timestep weights on the squared error of the UNet's target. In units of the clean-image error (the
    epsilon error is SNR times it, the v error SNR + 1 times it) they are Min-SNR-5's min(SNR, 5) for epsilon (Hang
    et al. 2023: the same optimum in far fewer steps) and min(SNR, 5) + 1 for v: never below 1, so the high-noise
    steps where the words decide layout and colour keep their weight."""
    import torch

    snr = alphas_cumprod / (1 - alphas_cumprod)
    if prediction == "v_prediction":
        return (torch.clamp(snr, max=MIN_SNR) + V_FLOOR) / (snr + 1)
    return torch.clamp(snr, max=MIN_SNR) / snr


def train_diffusion(text_encoder, unet, tokenizer, pool, scale: float, rng: np.random.Generator,
                    steps: int, batch: int, log, ema_decay: float = 0.995, uncond_rate: float = UNCOND_RATE,
                    prediction: str = PREDICTION, lr: float = DIFFUSION_LR, freeze_text: bool = False):
    """UNet training, with the text encoder trained jointly or (`freeze_text`, after the text stage) frozen;
    returns the EMA copies (what is shipped; a frozen encoder as it is) and the last loss."""
    import torch
    from diffusers import DDPMScheduler

    scenes, means, stds = pool
    noise_schedule = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   num_train_timesteps=1000)
    weight = loss_weights(noise_schedule.alphas_cumprod, prediction)
    trained = [unet] if freeze_text else [unet, text_encoder]
    params = [p for module in trained for p in module.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), text_encoder if freeze_text else copy.deepcopy(text_encoder).eval()
    ema_params = [p for module in ([ema_unet] if freeze_text else [ema_unet, ema_text]) for p in module.parameters()]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for module in trained:
        module.train()
    recent = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step, steps, lr, 200)
        index = rng.integers(len(scenes), size=batch)
        captions = ["" if rng.random() < uncond_rate else
                    caption(scenes[i], rng, omit_probability=OMIT_RATE, omit_identity_probability=OMIT_IDENTITY_RATE)
                    for i in index]
        idx = torch.from_numpy(index)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scale
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, 1000, (batch,), generator=gen)
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(not freeze_text):  # frozen: no backward through the encoder (cheaper steps)
            context = text_encoder(tokenize(tokenizer, captions))[0]
        target = noise_schedule.get_velocity(latents, noise, timesteps) if prediction == "v_prediction" else noise
        per_sample = (unet(noisy, timesteps, context).sample - target).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * weight[timesteps]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # warms up so early weights do not dominate
        with torch.no_grad():
            for ema_p, p in zip(ema_params, params):
                ema_p.lerp_(p, 1 - decay)
        recent = (recent + [loss.item()])[-100:]
        log(step, steps, f"diffusion loss {np.mean(recent):.4f}")
    return ema_text, ema_unet, float(np.mean(recent))


def build_pipeline(tokenizer, text_encoder, unet, vae, prediction: str = PREDICTION):
    from diffusers import StableDiffusionPipeline

    from models.tiny_pipeline import pndm_scheduler

    return StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                   unet=unet.eval(), scheduler=pndm_scheduler(prediction), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def train(out: str | Path, seed: int = 0, vae_steps: int = 800, unet_steps: int = 2200, batch: int = 32,
          pool_size: int = 24576, threads: int = 2, quiet: bool = False, overwrite: bool = False,
          prediction: str = PREDICTION, text: str = TEXT_ENCODER, text_steps: int = 120,
          text_batch: int = 256) -> dict:
    """Train and save the pipeline to `out` (an existing `out` only with `overwrite`; written under a
    temporary name and renamed, so an interrupted run leaves nothing); returns a summary."""
    import torch
    from tqdm import tqdm

    from models.files import atomic_path, check_writable

    from models.errors import ModelError

    if prediction not in PREDICTIONS:
        raise ModelError(f"prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
    if text not in TEXT_ENCODERS:
        raise ModelError(f"text encoder {text!r} is not one of {', '.join(TEXT_ENCODERS)}")
    check_writable(out, overwrite=overwrite, kind="folder")  # before the training, not after it
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    tokenizer, text_encoder, unet, vae = build_components(seed)
    bars: dict[str, tqdm] = {}

    def log(step, total, message):
        if quiet:
            return
        key = message.split()[0]
        if key not in bars:
            bars[key] = tqdm(total=total, desc=key, mininterval=5)
        bars[key].set_postfix_str(message, refresh=False)
        bars[key].update(1)

    times = {}
    cpu_start = time.process_time()
    start = time.perf_counter()
    vae_mse = train_vae(vae, rng, vae_steps, batch, log)
    times["vae"] = time.perf_counter() - start

    start = time.perf_counter()
    pool = encode_pool(vae, rng, pool_size)
    scale = float(LATENT_STD / pool[1].std())  # measured, as SD's 0.18215 is for its VAE
    vae.register_to_config(scaling_factor=scale)
    times["encode"] = time.perf_counter() - start

    text_accuracy = None
    if text == "bag":
        make_bag_of_words(text_encoder, tokenizer.bos_token_id, tokenizer.eos_token_id, int(rng.integers(2**31)))
    elif text == "grounded":
        start = time.perf_counter()
        text_accuracy = train_text(text_encoder, lambda captions: tokenize(tokenizer, captions), rng, text_steps,
                                   text_batch, log, omit=OMIT_RATE, omit_identity=OMIT_IDENTITY_RATE,
                                   uncond_rate=UNCOND_RATE)
        times["text"] = time.perf_counter() - start

    start = time.perf_counter()
    text_encoder, unet, loss = train_diffusion(text_encoder, unet, tokenizer, pool, scale, rng,
                                               unet_steps, batch, log, prediction=prediction,
                                               freeze_text=text != "joint")
    times["diffusion"] = time.perf_counter() - start
    for bar in bars.values():
        bar.close()

    pipe = build_pipeline(tokenizer, text_encoder, unet, vae, prediction)
    with atomic_path(out, directory=True) as tmp:
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        write_legacy_files(tmp / "tokenizer")  # the files transformers 4.x / optimum read
    summary = {"seed": seed, "vae_steps": vae_steps, "unet_steps": unet_steps, "batch": batch,
               "pool_size": pool_size, "threads": threads, "prediction": prediction, "text": text,
               "text_steps": text_steps if text == "grounded" else 0,
               "text_batch": text_batch, "text_accuracy": None if text_accuracy is None else round(text_accuracy, 4), "vae_mse": round(vae_mse, 6),
               "latent_scaling_factor": round(scale, 6), "final_diffusion_loss": round(loss, 6),
               "seconds": {k: round(v, 1) for k, v in times.items()},
               "cpu_seconds": round(time.process_time() - cpu_start, 1)}
    # Timings differ run to run; keep them out of the weights' folder so it stays byte-identical.
    if not quiet:
        print(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    # OpenMP's default wait policy (idle threads spin briefly before sleeping) is ~35% faster per
    # step than OMP_WAIT_POLICY=PASSIVE on an idle 2-core machine, with bit-identical results. On
    # a machine shared with other jobs, spinning threads fight them: set OMP_WAIT_POLICY=PASSIVE.
    parser = training_parser(__doc__, "folder to write the diffusers pipeline to")
    parser.add_argument("--vae-steps", type=int, default=800)
    parser.add_argument("--unet-steps", type=int, default=2200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pool-size", type=int, default=24576, help="scenes encoded once for stage 2")
    parser.add_argument("--prediction", choices=PREDICTIONS, default=PREDICTION, help="what the UNet predicts")
    parser.add_argument("--text", choices=TEXT_ENCODERS, default=TEXT_ENCODER,
                        help="the text encoder: a fixed bag of words (default), pretrained by grounding heads, or "
                             "trained jointly with the UNet")
    parser.add_argument("--text-steps", type=int, default=120, help="steps of the grounding stage (--text grounded)")
    parser.add_argument("--text-batch", type=int, default=256, help="captions per step of the text stage")
    args = parser.parse_args(argv)
    return run_training(train, args.out, args.seed, args.vae_steps, args.unet_steps, args.batch, args.pool_size,
                        args.threads, overwrite=args.overwrite, prediction=args.prediction,
                        text=args.text, text_steps=args.text_steps, text_batch=args.text_batch)


if __name__ == "__main__":
    raise SystemExit(main())
