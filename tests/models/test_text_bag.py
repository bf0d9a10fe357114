"""The fixed bag-of-words text encoder: padding states are the caption's word sum, the same for any word order and for
unseen combinations; the start state is a constant with one outlier channel; nothing trains."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def encode():
    import torch

    from models.text_bag import BOS_CHANNEL, make_bag_of_words
    from models.train_shapes import build_components, tokenize

    tokenizer, encoder, _unet, _vae = build_components(0)
    make_bag_of_words(encoder, tokenizer.bos_token_id, tokenizer.eos_token_id, seed=5)

    def run(captions):
        ids = tokenize(tokenizer, captions)
        with torch.no_grad():
            return encoder(ids)[0].numpy(), ids.numpy(), encoder
    run.eos, run.bos_channel = tokenizer.eos_token_id, BOS_CHANNEL
    return run


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_padding_states_are_alike_and_carry_the_caption_not_the_word_order(encode):
    states, ids, _ = encode(["one large purple circle on the left on a white background",
                             "on a white background on the left one purple circle large",
                             "one large purple square on the left on a white background"])
    last = int(np.nonzero(ids[0] == encode.eos)[0][0])
    assert _cos(states[0, last + 1], states[0, 76]) > 0.99  # every padding position: the same bag
    assert _cos(states[0, 76], states[1, 76]) > 0.999       # order-free
    assert _cos(states[0, 76], states[2, 76]) < 0.95        # one word changed: a different bag


def test_the_bag_is_additive_in_the_words(encode):
    # (circle, purple) is a held-out pair: its bag is still the layer norm of the word sum, as for seen pairs
    states, _, _ = encode(["purple circle", "purple", "circle", ""])
    parts = states[1, 76] + states[2, 76] - states[3, 76]
    assert _cos(states[0, 76], parts) > 0.9
    assert _cos(states[1, 76], states[2, 76]) < 0.5


def test_the_start_state_is_constant_with_one_outlier_channel_and_nothing_trains(encode):
    states, _, encoder = encode(["two red squares", "a picture of three big blue crosses at the top"])
    start = states[:, 0]
    np.testing.assert_allclose(start[0], start[1], atol=1e-6)
    assert int(np.abs(start[0]).argmax()) == encode.bos_channel
    # one channel holds the whole norm (START_SCALE * sqrt(64) = 160), 40x any value of the other states (~3.4)
    assert np.abs(start[0]).max() > 40 * np.abs(states[:, 1:]).max()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_the_embeddings_are_drawn_from_the_seed():
    from models.text_bag import make_bag_of_words
    from models.train_shapes import build_components

    weights = []
    for seed in (1, 1, 2):
        tokenizer, encoder, _unet, _vae = build_components(0)
        make_bag_of_words(encoder, tokenizer.bos_token_id, tokenizer.eos_token_id, seed=seed)
        weights.append(encoder.embeddings.token_embedding.weight.detach().numpy().copy())
    assert np.array_equal(weights[0], weights[1]) and not np.array_equal(weights[0], weights[2])
