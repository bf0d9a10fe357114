"""Block reconstruction on the tiny pipeline: it lowers the block loss, writes codes only where it learned them,
is deterministic for a seed, and its recipe round-trips and drives the fake-quant reference."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dgq_compiler.edadm.reconstruct import ReconstructOptions, find_blocks, reconstruct_recipe
from dgq_compiler.errors import DgqError

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "a yellow cross"]
BLOCKS = ["down_blocks.1.resnets.0", "mid_block.attentions.0"]
OPTIONS = ReconstructOptions(iterations=40, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def calibrated():
    from dgq_compiler.calibrate.run import calibrate, open_pipeline

    pipe = open_pipeline("tiny", device="cpu")
    return pipe, calibrate(pipe, PROMPTS[:2], model_name="tiny", steps=2, seed=0)


@pytest.fixture(scope="module")
def setup(calibrated):
    from dgq_compiler.config import preset
    from dgq_compiler.edadm.calset import select_calibration_set
    from dgq_compiler.quantize import quantize_stats

    pipe, stats = calibrated
    recipe, _ = quantize_stats(stats, preset("dgq-w4a8-g8"), pipe.unet)
    calset = select_calibration_set(pipe, PROMPTS, 2, steps=2, guidance=7.5, seed=0)
    return pipe, recipe, calset


@pytest.fixture(scope="module")
def reconstructed(setup):
    pipe, recipe, calset = setup
    return reconstruct_recipe(recipe, pipe.unet, calset, OPTIONS, only=BLOCKS)


def test_blocks_cover_every_quantized_weight_once(setup):
    pipe, recipe, _ = setup
    blocks = find_blocks(pipe.unet, recipe)
    layers = [layer for _b, inner in blocks for layer in inner]
    assert sorted(layers) == sorted(m for m, role in recipe.tensors if role == "weight")
    assert len(set(layers)) == len(layers)
    assert ("time_embedding.linear_1", ["time_embedding.linear_1"]) in blocks  # a lone layer is its own block
    resnet = dict(blocks)["down_blocks.1.resnets.0"]
    assert {"down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv2"} <= set(resnet)


def test_reconstruction_lowers_the_block_loss_and_learns_codes_there_only(setup, reconstructed):
    pipe, recipe, _ = setup
    new, report = reconstructed
    assert [b.block for b in report.blocks] == BLOCKS
    for b in report.blocks:
        assert b.loss_learned < 0.95 * b.loss_nearest and b.kept == "learned" and 0 < b.flipped < 0.5
    inside = {layer for name, inner in find_blocks(pipe.unet, recipe) if name in BLOCKS for layer in inner}
    for (module, role), tq in new.tensors.items():
        old = recipe.tensors[(module, role)]
        assert (tq.codes is not None) == (module in inside and role == "weight")
        assert np.array_equal(tq.scale, old.scale) and np.array_equal(tq.zero_point, old.zero_point)
        if tq.codes is not None:  # up or down from the weight: never further than one step from round-to-nearest
            w = dict(pipe.unet.named_modules())[module].weight.detach().numpy()
            shape = (-1,) + (1,) * (w.ndim - 1)
            half = 2 ** (tq.bits - 1)
            nearest = np.clip(np.round(w / old.scale.reshape(shape)) + old.zero_point.reshape(shape), -half, half - 1)
            assert np.abs(tq.codes - nearest).max() == 1


def test_reconstruction_is_deterministic_for_a_seed(setup, reconstructed):
    pipe, recipe, calset = setup
    again, report = reconstruct_recipe(recipe, pipe.unet, calset, OPTIONS, only=BLOCKS[:1])
    first = reconstructed[0]
    for layer in dict(find_blocks(pipe.unet, recipe))[BLOCKS[0]]:
        assert np.array_equal(again.tensors[(layer, "weight")].codes, first.tensors[(layer, "weight")].codes)
    assert report.blocks[0].loss_learned == reconstructed[1].blocks[0].loss_learned
    other, _ = reconstruct_recipe(recipe, pipe.unet, calset, replace(OPTIONS, seed=5), only=BLOCKS[:1])
    assert any(not np.array_equal(other.tensors[(l, "weight")].codes, first.tensors[(l, "weight")].codes)
               for l in dict(find_blocks(pipe.unet, recipe))[BLOCKS[0]])


def _same(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_streamed_capture_equals_one_pass_over_every_block_and_stops_at_the_block(setup):
    """Reconstruction captures one block at a time (memory: one block's data): the tensors are bit-identical to one
    pass capturing every block at once (the reconstruction before streaming), so its result is too; and a streamed
    pass stops at its block (conv_out never runs while a down block is captured)."""
    from dgq_compiler.edadm.reconstruct import capture

    pipe, recipe, calset = setup
    blocks = [b for b in find_blocks(pipe.unet, recipe) if b[0] in BLOCKS + ["time_embedding.linear_1"]]
    together = capture(pipe.unet, calset, blocks)
    ran = []
    handle = pipe.unet.conv_out.register_forward_hook(lambda *_: ran.append(1))
    try:
        for name, layers in blocks:
            alone = capture(pipe.unet, calset, [(name, layers)], stop_after_block=True)
            assert list(alone) == [name] and len(alone[name]["calls"]) == len(list(calset.calls()))
            assert _same(alone[name]["calls"], together[name]["calls"])
            assert _same(alone[name]["layers"], together[name]["layers"])
    finally:
        handle.remove()
    assert not ran
    with pytest.raises(ValueError, match="exactly one block"):
        capture(pipe.unet, calset, blocks, stop_after_block=True)


def test_recipe_with_codes_round_trips_and_drives_fake_quant(setup, reconstructed, tmp_path):
    import torch

    from dgq_compiler.fakequant import apply_recipe
    from dgq_compiler.recipe import Recipe

    pipe, _recipe, _ = setup
    new = reconstructed[0]
    new.save(tmp_path / "r.json")
    loaded = Recipe.load(tmp_path / "r.json", unet_config=pipe.unet.config)
    assert loaded == new
    layer = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    tq = loaded.tensors[(layer, "weight")]
    module = dict(pipe.unet.named_modules())[layer]
    before = module.weight.detach().clone()
    with apply_recipe(pipe.unet, loaded, activations=False):
        want = (tq.codes.astype(np.float32) - tq.zero_point.astype(np.float32)[:, None]) * tq.scale[:, None]
        np.testing.assert_array_equal(module.weight.detach().numpy(), want)
    assert torch.equal(module.weight.detach(), before)  # restored
    with pytest.raises(DgqError, match="codes must be in -8..7"):
        replace(tq, codes=np.full(tq.codes.shape, 9, np.int8))
    with pytest.raises(DgqError, match="codes are for weights only"):
        replace(loaded.tensors[(layer, "input")], codes=tq.codes)
    with pytest.raises(DgqError, match="no block 'nowhere'"):
        reconstruct_recipe(new, pipe.unet, setup[2], OPTIONS, only=["nowhere"])


def test_target_adaptation_re_rounds_learned_codes_onto_its_grid():
    """A target with symmetric weights regrids the channel; learned codes follow onto the new grid (within half a
    new step of their old values) instead of being silently paired with the new scales."""
    from dgq_compiler.adapt import _regrid_weights
    from dgq_compiler.recipe import TensorQuant

    rng = np.random.default_rng(0)
    scale = rng.uniform(0.01, 0.02, 4).astype(np.float32)
    zero = np.array([-2, 0, 1, 3], np.int32)
    codes = rng.integers(-8, 8, (4, 6)).astype(np.int8)
    tq = TensorQuant("m", "weight", "uniform", 4, "out_channel", scale, zero, codes=codes)
    new = _regrid_weights(tq, 8, symmetric=True)
    old_values = (codes - zero[:, None]) * scale[:, None]
    new_values = (new.codes.astype(np.float64) - new.zero_point[:, None]) * new.scale[:, None]
    assert np.all(new.zero_point == 0) and new.codes.dtype == np.int8
    assert np.all(np.abs(new_values - old_values) <= 0.5 * new.scale[:, None] + 1e-9)


def test_learned_activation_steps_lower_the_block_loss_against_fixed_steps(calibrated, setup):
    """LSQ on a tiny block at W8A4 (the activations' min-max ranges leave room): learning the layers' input step
    sizes with the rounding ends below the rounding alone on the same data, seed and iterations; the recipe gets the
    learned scales (zero points, group maps unchanged; steps no calibration call uses keep their scales)."""
    from dgq_compiler.config import preset
    from dgq_compiler.quantize import quantize_stats

    (pipe, stats), (_pipe, _recipe, calset) = calibrated, setup
    a4, _ = quantize_stats(stats, preset("dgq-w8a8-g8").replace(act_bits=4), pipe.unet)
    block = BLOCKS[:1]
    fixed, fixed_report = reconstruct_recipe(a4, pipe.unet, calset, OPTIONS, only=block)
    lsq, lsq_report = reconstruct_recipe(a4, pipe.unet, calset, replace(OPTIONS, act_steps=True), only=block)
    (f,), (l,) = fixed_report.blocks, lsq_report.blocks
    assert f.loss_nearest == l.loss_nearest  # the same starting point: the recipe's steps, nearest rounding
    assert l.kept == "learned" and l.loss_learned < 0.95 * f.loss_learned  # 0.0248 vs 0.0266 (nearest 0.0273)
    inputs = [layer for layer in dict(find_blocks(pipe.unet, a4))[block[0]] if (layer, "input") in a4.tensors]
    used = sorted({a4.step_index(t) for t in calset.timesteps})
    for layer in inputs:
        old, new = a4.tensors[(layer, "input")], lsq.tensors[(layer, "input")]
        assert np.array_equal(old.zero_point, new.zero_point) and np.array_equal(old.group_map, new.group_map)
        assert not np.allclose(old.scale[used], new.scale[used])
        assert np.array_equal(np.delete(old.scale, used, axis=0), np.delete(new.scale, used, axis=0))
        assert fixed.tensors[(layer, "input")] == old  # without the option the steps stay the recipe's
    with pytest.raises(DgqError, match="needs the activations quantized"):
        ReconstructOptions(act_steps=True, activations=False)


def test_guidance_term_adds_the_direction_error_linearly_and_changes_the_rounding(setup, reconstructed):
    """guidance_weight w adds w x (relative error of cond - uncond): positive, linear in w; it steers the codes."""
    pipe, recipe, calset = setup
    block = BLOCKS[1]  # cross-attention: the text enters here

    def nearest_loss(weight):
        options = replace(OPTIONS, iterations=1, guidance_weight=weight)
        return reconstruct_recipe(recipe, pipe.unet, calset, options, only=[block])[1].blocks[0].loss_nearest

    plain, one, three = nearest_loss(0.0), nearest_loss(1.0), nearest_loss(3.0)
    assert one > plain * 1.001
    assert three - plain == pytest.approx(3 * (one - plain), rel=1e-4)
    steered, report = reconstruct_recipe(recipe, pipe.unet, calset, replace(OPTIONS, guidance_weight=10.0),
                                         only=[block])
    assert report.blocks[0].kept == "learned"
    layers = dict(find_blocks(pipe.unet, recipe))[block]
    assert any(not np.array_equal(steered.tensors[(layer, "weight")].codes,
                                  reconstructed[0].tensors[(layer, "weight")].codes) for layer in layers)
    with pytest.raises(DgqError, match="guidance_weight must be a finite number >= 0"):
        ReconstructOptions(guidance_weight=-1.0)
