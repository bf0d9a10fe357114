"""The torch fake-quant reference: the contract's arithmetic, and applying/removing a recipe on a UNet."""
import numpy as np
import pytest
import torch

from dgq_compiler.config import preset
from dgq_compiler.fakequant import apply_recipe, quantize_log2, quantize_uniform
from dgq_compiler.quantize.weights import fake_quant_weight, quantize_weight
from tests.random_recipes import random_recipe
from models.zoo import unet_from_config, zoo_config


def test_uniform_matches_the_contract_including_half_way_ties():
    s, z, bits = np.float32(0.1), np.float32(3), 6
    x = np.array([-0.35, -0.25, 0.05, 0.15, 0.25, 1.0, 100.0, -100.0, 0.0], dtype=np.float32)
    x = np.concatenate([x, np.arange(-5, 70, dtype=np.float32) * s + s / 2])  # exact .5 ties after x / s
    q = np.clip(np.round(x / s) + z, 0, 2 ** bits - 1)  # numpy rounds half to even too
    expected = (q - z) * s
    got = quantize_uniform(torch.from_numpy(x), torch.tensor(s), torch.tensor(z), bits).numpy()
    assert np.array_equal(got, expected.astype(np.float32))
    assert got[6] == (63 - 3) * s and got[7] == -3 * s  # saturation at both ends


def test_log2_codes_and_the_zero_case():
    peak = torch.tensor(0.5)
    x = torch.tensor([0.5, 0.25, 0.5 * 2 ** -3, 0.0, 0.5 * 2 ** -0.49, 0.5 * 2 ** -0.51, 1e-30, 0.9])
    got = quantize_log2(x, peak, bits=4)
    expected = torch.tensor([0.5, 0.25, 0.5 / 8, 0.5 * 2 ** -15, 0.5, 0.25, 0.5 * 2 ** -15, 0.5])
    assert torch.equal(got, expected)


def test_weights_per_output_channel_min_max_and_mse():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, 3, 3, generator=gen)  # gaussian tails: clipping the range a little pays at 4 bits
    w[3] *= 5
    mm = quantize_weight("m", w, 4, "minmax")
    assert mm.scale.shape == (16,) and mm.zero_point.min() >= -8 and mm.zero_point.max() <= 7
    w2 = w.reshape(16, -1)
    lo, hi = w2.min(1).values.clamp(max=0), w2.max(1).values.clamp(min=0)
    assert np.allclose(mm.scale, ((hi - lo) / 15).numpy(), rtol=1e-6)
    mse = quantize_weight("m", w, 4, "mse", candidates=80, norm=2.4)
    err = lambda tq: (fake_quant_weight(w2, torch.from_numpy(tq.scale), torch.from_numpy(tq.zero_point), 4)  # noqa
                      - w2).abs().pow(2.4).mean(1)
    assert torch.all(err(mse) <= err(mm)) and err(mse).mean() < 0.9 * err(mm).mean()
    assert np.all(mse.scale <= mm.scale * (1 + 1e-6))
    # the contract's signed grid: every dequantized value is (q - z) * s with q in [-8, 7]
    wq = fake_quant_weight(w2, torch.from_numpy(mm.scale), torch.from_numpy(mm.zero_point), 4)
    codes = wq / torch.from_numpy(mm.scale)[:, None] + torch.from_numpy(mm.zero_point)[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.round().min() >= -8 and codes.round().max() <= 7


@pytest.fixture(scope="module")
def tiny_unet():
    return unet_from_config(zoo_config("tiny"), device="cpu", seed=0)


def _inputs(t: float):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 16, 16, generator=gen), torch.tensor([t]), torch.randn(2, 77, 32, generator=gen)


def test_apply_and_remove_a_recipe(tiny_unet):
    recipe = random_recipe(tiny_unet, preset("dgq-w8a8-g8"), (901, 501, 101), seed=0)
    sample, t, context = _inputs(480.0)
    with torch.no_grad():
        fp = tiny_unet(sample, t, context).sample
        weights = {n: p.clone() for n, p in tiny_unet.named_parameters()}
        with apply_recipe(tiny_unet, recipe) as handle:
            q1 = tiny_unet(sample, t, context).sample
            assert handle.steps.index == 1  # 480 is nearest to 501
            q2 = tiny_unet(sample, t, context).sample
            changed = [n for n, p in tiny_unet.named_parameters() if not torch.equal(p, weights[n])]
        after = tiny_unet(sample, t, context).sample
    assert torch.equal(q1, q2) and not torch.equal(q1, fp)
    assert "conv_in.weight" not in changed and "down_blocks.0.resnets.0.conv1.weight" in changed
    assert all(torch.equal(p, weights[n]) for n, p in tiny_unet.named_parameters())
    assert torch.equal(after, fp)


def test_cross_attention_keeps_the_start_token_in_full_precision(tiny_unet):
    recipe = random_recipe(tiny_unet, preset("dgq-w8a6-g8"), (901, 501, 101), seed=0)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert recipe.tensors[(name, "attn_probs")].exclude_bos
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(8, 256, 77, generator=gen) * 3, dim=-1)
    value = torch.randn(8, 77, 4, generator=gen)
    k = torch.randn(2, 77, 32, generator=gen) * 5
    with apply_recipe(tiny_unet, recipe, weights=False) as handle:
        out = handle.attend(name, probs, value, cross=True)
        kq = handle.qkv(name, "k", k, cross=True)
    rest = probs[..., 1:]
    expected = torch.bmm(probs[..., :1], value[:, :1]) + torch.bmm(quantize_log2(rest, rest.amax(), 6), value[:, 1:])
    assert torch.equal(out, expected)
    assert torch.equal(kq[:, 0], k[:, 0]) and not torch.equal(kq[:, 1:], k[:, 1:])


def test_pixel_groups_resample_at_another_resolution_and_an_unknown_map_is_refused(tiny_unet):
    """At 24x24 (16x16 calibrated) pixel maps are resampled as the graph does; a map whose length is no level of
    the calibrated grid cannot be resampled and is refused by name."""
    import dataclasses

    from dgq_compiler.errors import DgqError

    recipe = random_recipe(tiny_unet, preset("dgq-w8a8-g8"), (901, 101), seed=5)
    assert any(tq.axis == "pixel" for tq in recipe.tensors.values())
    _, t, context = _inputs(101.0)
    with torch.no_grad(), apply_recipe(tiny_unet, recipe):
        out = tiny_unet(torch.randn(2, 4, 24, 24), t, context).sample
    assert out.shape == (2, 4, 24, 24) and torch.isfinite(out).all()
    key, tq = next((k, v) for k, v in recipe.tensors.items() if v.axis == "pixel" and v.group_map.shape[1] == 256)
    odd = dataclasses.replace(tq, group_map=tq.group_map[:, :250])  # 250 pixels: no level of 16x16 has that many
    broken = dataclasses.replace(recipe, tensors={**recipe.tensors, key: odd})
    with torch.no_grad(), apply_recipe(tiny_unet, broken):
        with pytest.raises(DgqError, match=r"groups 250 pixels/tokens.*no level of the calibrated grid"):
            tiny_unet(torch.randn(2, 4, 24, 24), t, context)
