"""The "text" stage of the shapes model: pretrain the CLIP text encoder to keep attribute words apart, then freeze it.

Real Stable Diffusion conditions on a pretrained, frozen CLIP text encoder. Trained jointly with the UNet from
scratch, the shapes model's encoder nearly merged the five position phrases (their text states 0.041 apart,
`benchmarks/shapes_quality.py --conditioning-check`), so no UNet could read position from them. This stage grounds
the encoder first: per-attribute linear heads (discarded afterwards) predict each attribute's value, or
"unspecified" when the caption leaves it out, from every end-of-text/padding token's state. Those tokens come after
the whole caption in the causal encoder and are most of the 77 states the UNet's cross-attention reads, so each then
carries every attribute the caption states. Captions are drawn exactly as the diffusion stage draws them (training
combinations, the same omissions, the same share of empty captions); labels are what the caption says
(`parse_caption`), so an omitted word is "unspecified", never guessed from the scene.

Measured (`python -m models.train_shapes --out DIR --seed 0 --text grounded --text-steps 120`: 120 steps at 256 captions, head
accuracy 0.999, then 2200 UNet steps on the frozen encoder; `benchmarks/shapes_quality.py`, 64 images, guidance
7.5; joint training's shipped figures in brackets): position text states 0.433 apart (0.041), position 0.92 on the
held-out set and 0.97 on the validation set (0.23, 0.23), the position check 25/25 (5/25), validation alignment 0.792
(0.716) at Fréchet distance 319 (334). But on the held-out (unseen shape/colour) pairs colour fell to 0.23 (0.62) and
background to 0.67 (0.92): alignment 0.682 (0.685), Fréchet distance 1086 (777). The end-of-text states carry the
caption's colour/shape pair as one code, and the UNet does not compose codes of pairs it never saw. So the shipped
weights use the fixed bag-of-words encoder instead (models/text_bag.py; this stage is `--text grounded`). 600-step pilots (the shipped VAE, 8192 scenes; held-out alignment,
colour, shape, position, Fréchet): joint 0.547, 0.45, 0.28, 0.28, 902; this stage, frozen 0.753, 0.34, 0.38, 0.97,
938 (the longer schedule fits the seen pairs more tightly); heads on each word token instead (what the caption states
up to it) 0.734, 0.25, 0.41, 0.92, 999; this stage, then trained jointly 0.688, 0.42, 0.22, 0.77, 1083.
"""
from __future__ import annotations

import numpy as np

from models.shapes_dataset import ATTRIBUTES, caption, parse_caption, sample_scene

TEXT_LR = 3e-3  # peak, after 50 warm-up steps; cosine decay to 10%


def lr_schedule(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak (every stage of the shapes model uses it)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def caption_labels(text: str) -> list[int]:
    """Per attribute (ATTRIBUTES' order), the value's index, or len(values) for "unspecified"."""
    stated = parse_caption(text)
    return [values.index(stated[name]) if name in stated else len(values) for name, values in ATTRIBUTES.items()]


def draw_captions(rng: np.random.Generator, n: int, omit: float, omit_identity: float, uncond_rate: float) -> list[str]:
    """Captions of random training scenes as the diffusion stage draws them (empty at `uncond_rate`)."""
    return ["" if rng.random() < uncond_rate else
            caption(sample_scene(rng, heldout=False), rng, omit_probability=omit, omit_identity_probability=omit_identity)
            for _ in range(n)]


def train_text(text_encoder, tokenize, rng: np.random.Generator, steps: int, batch: int, log, *, omit: float,
               omit_identity: float, uncond_rate: float, lr: float = TEXT_LR) -> float:
    """Train `text_encoder` in place with the grounding heads; returns the final accuracy of the heads on the
    attributes the captions state (mean over the last 50 steps). The encoder is left frozen (eval, no grad)."""
    import torch

    heads_gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    width = text_encoder.config.hidden_size
    heads = torch.nn.ModuleList(torch.nn.Linear(width, len(values) + 1) for values in ATTRIBUTES.values())
    with torch.no_grad():  # init drawn from the seed, not from torch's global generator
        for head in heads:
            head.weight.normal_(0.0, width ** -0.5, generator=heads_gen)
            head.bias.zero_()
    eos = text_encoder.config.eos_token_id
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    text_encoder.train()
    recent: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step, steps, lr, 50)
        captions = draw_captions(rng, batch, omit, omit_identity, uncond_rate)
        ids = tokenize(captions)
        labels = torch.tensor([caption_labels(text) for text in captions])         # [B, attributes]
        states = text_encoder(ids)[0]                                               # [B, 77, width]
        after_text = (ids == eos).float()                                           # EOS and its padding copies
        loss, correct, stated = 0.0, 0.0, 0.0
        for k, head in enumerate(heads):
            logits = head(states)                                                   # [B, 77, values + 1]
            target = labels[:, k, None].expand(-1, ids.shape[1])
            per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            loss = loss + (per_token * after_text).sum() / after_text.sum()
            with torch.no_grad():
                hit = (logits.argmax(-1) == target).float() * after_text
                said = (labels[:, k] < logits.shape[-1] - 1).float()[:, None] * after_text
                correct, stated = correct + (hit * said).sum(), stated + said.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent = (recent + [float(correct / stated.clamp_min(1))])[-50:]
        log(step, steps, f"text accuracy {np.mean(recent):.3f}")
    text_encoder.eval().requires_grad_(False)
    return float(np.mean(recent)) if recent else 0.0
