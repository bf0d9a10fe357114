"""The text stage: labels say what a caption states, the heads learn, and the diffusion stage leaves the encoder frozen."""
from __future__ import annotations

import numpy as np
import pytest

from models.shapes_dataset import ATTRIBUTES
from models.train_text import caption_labels, draw_captions, train_text

UNSPECIFIED = [len(values) for values in ATTRIBUTES.values()]


def _labels(**named):
    return [ATTRIBUTES[name].index(named[name]) if name in named else UNSPECIFIED[k]
            for k, name in enumerate(ATTRIBUTES)]


def test_labels_are_what_the_caption_states_and_omitted_words_are_unspecified():
    assert caption_labels("two large red squares on the left on a white background") == _labels(
        shape="square", colour="red", size="large", position="left", count="two", background="white")
    assert caption_labels("a picture of a little green cross in the middle over a gray background") == _labels(
        shape="cross", colour="green", size="small", position="center", count="one", background="gray")
    # colour and shape left out: no colour, no shape, and "a" alone does not say how many
    assert caption_labels("a big on the right against a black background") == _labels(
        size="large", position="right", background="black")
    assert caption_labels("") == UNSPECIFIED
    assert caption_labels("two red circles") != caption_labels("two red squares")


def test_captions_are_drawn_from_the_generator_with_the_stage_two_omissions():
    first = draw_captions(np.random.default_rng(5), 400, omit=0.05, omit_identity=0.1, uncond_rate=0.1)
    assert first == draw_captions(np.random.default_rng(5), 400, omit=0.05, omit_identity=0.1, uncond_rate=0.1)
    assert first != draw_captions(np.random.default_rng(6), 400, omit=0.05, omit_identity=0.1, uncond_rate=0.1)
    empty = sum(c == "" for c in first)
    no_colour = sum(c != "" and caption_labels(c)[1] == UNSPECIFIED[1] for c in first)
    assert 20 <= empty <= 65 and 15 <= no_colour <= 65  # ~10% of 400 each
    full = draw_captions(np.random.default_rng(5), 50, omit=0.0, omit_identity=0.0, uncond_rate=0.0)
    assert all(UNSPECIFIED[k] not in (caption_labels(c)[k],) for c in full for k in (0, 1, 2, 3, 5))


def _tiny_encoder_and_tokenize():
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from models.shapes_dataset import vocabulary
    from models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(vocabulary())
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=24, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))

    def tokenize(captions):
        return tokenizer(captions, padding="max_length", max_length=24, truncation=True, return_tensors="pt").input_ids
    return encoder, tokenize


def _position_spread(encoder, tokenize):
    import torch

    phrases = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
    with torch.no_grad():
        states = encoder(tokenize([f"one large red square {p} on a white background" for p in phrases]))[0]
    return float((states - states.mean(0)).norm() / states.norm())


def test_the_heads_learn_and_pull_the_position_phrases_apart_then_the_encoder_is_frozen():
    import torch

    encoder, tokenize = _tiny_encoder_and_tokenize()
    before = _position_spread(encoder, tokenize)
    accuracy = train_text(encoder, tokenize, np.random.default_rng(0), 60, 64, lambda *a: None, omit=0.05,
                          omit_identity=0.1, uncond_rate=0.1, lr=1e-2)
    after = _position_spread(encoder, tokenize)
    assert accuracy > 0.6, accuracy  # chance is below 0.3 (2 to 6 values per attribute)
    assert after > 2 * before, (before, after)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(RuntimeError):  # frozen: nothing to differentiate
        encoder(tokenize(["two red circles"]))[0].sum().backward()
    assert torch.equal(encoder(tokenize(["two red circles"]))[0], encoder(tokenize(["two red circles"]))[0])


def test_the_diffusion_stage_trains_the_unet_and_leaves_a_frozen_text_encoder_untouched():
    import torch

    from models.shapes_dataset import sample_scene
    from models.train_shapes import build_components, train_diffusion

    tokenizer, text_encoder, unet, _vae = build_components(1)
    text_encoder.eval().requires_grad_(False)
    text_before = {k: v.clone() for k, v in text_encoder.state_dict().items()}
    unet_before = {k: v.clone() for k, v in unet.state_dict().items()}
    rng = np.random.default_rng(0)
    pool = ([sample_scene(rng) for _ in range(8)], torch.randn(8, 4, 16, 16), torch.full((8, 4, 16, 16), 0.1))
    ema_text, ema_unet, _loss = train_diffusion(text_encoder, unet, tokenizer, pool, 0.5, rng, 2, 2,
                                                lambda *a: None, freeze_text=True)
    assert ema_text is text_encoder
    assert all(torch.equal(text_before[k], v) for k, v in ema_text.state_dict().items())
    assert any(not torch.equal(unet_before[k], v) for k, v in unet.state_dict().items())
