"""Calibration runs on the tiny pipeline: exact shard merging, bounded memory, deterministic recipes, CLI."""
import json

import numpy as np
import pytest

from dgq_compiler.calibrate.reference_stats import tensor_partials
from dgq_compiler.calibrate.run import calibrate, read_prompts, shard_indices
from dgq_compiler.calibrate.stats import CalibrationStats, merge_stats
from dgq_compiler.errors import DgqError

PROMPTS = ["a red bicycle leaning against a wall", "two cats on a sofa", "a bowl of fruit"]
STEPS = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    from dgq_compiler.calibrate.run import open_pipeline

    return open_pipeline("tiny", device="cpu")


@pytest.fixture(scope="module")
def one_run(pipe):
    return calibrate(pipe, PROMPTS, model_name="tiny", steps=STEPS, seed=7)


def _manifest(path):
    doc = json.loads(path.read_text())
    doc.pop("arrays")  # the arrays file's own name
    return doc


def test_sharded_calibration_merges_into_one_run_byte_for_byte(pipe, one_run, tmp_path):
    shards = [calibrate(pipe, PROMPTS, model_name="tiny", steps=STEPS, seed=7,
                        indices=shard_indices(len(PROMPTS), (i, 2))) for i in (1, 0)]
    assert [s.prompt_indices for s in shards] == [(1, 2), (0,)]
    merged = merge_stats(shards)
    one_run.save(tmp_path / "one.json")
    merged.save(tmp_path / "merged.json")
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "merged.safetensors").read_bytes()
    assert _manifest(tmp_path / "one.json") == _manifest(tmp_path / "merged.json")
    # and a shard alone differs (the merge is doing the work)
    assert any(not np.array_equal(one_run.arrays[k], shards[0].arrays[k]) for k in one_run.arrays)
    with pytest.raises(DgqError, match="repeats prompt"):
        merge_stats([shards[0], shards[0]])


def test_statistics_per_distinct_timestep_and_point(one_run):
    # PNDM (skip_prk_steps) calls the UNet STEPS + 1 times with one timestep repeated: T = STEPS
    assert one_run.T == STEPS and list(one_run.timesteps) == sorted(one_run.timesteps, reverse=True)
    roles = [p.role for p in one_run.points]
    assert roles.count("attn_probs") == roles.count("q") == 14 and "conv_in" not in {p.module for p in one_run.points}
    point = one_run.point("down_blocks.0.resnets.0.conv1", "input")
    assert (point.channels, point.pixels, point.layout) == (32, 256, "nchw")
    lo, hi = one_run.get(point, "channel_min"), one_run.get(point, "channel_max")
    plo, phi = one_run.get(point, "pixel_min"), one_run.get(point, "pixel_max")
    assert lo.shape == (STEPS, 32) and plo.shape == (STEPS, 256) and np.all(lo <= hi)
    assert np.array_equal(lo.min(axis=1), plo.min(axis=1)) and np.array_equal(hi.max(axis=1), phi.max(axis=1))
    cross = one_run.point("down_blocks.0.attentions.0.transformer_blocks.0.attn2", "attn_probs")
    key_max = one_run.get(cross, "key_max")
    assert cross.cross and key_max.shape == (STEPS, 77) and np.all((key_max > 0) & (key_max <= 1))
    mass = one_run.get(cross, "bos_mass_min"), one_run.get(cross, "bos_mass_max")
    assert np.all(mass[0] <= mass[1])
    k = one_run.point("down_blocks.0.attentions.0.transformer_blocks.0.attn2", "k")
    assert one_run.get(k, "bos_channel_min").shape == (STEPS, 32) and k.pixels == 77


def test_memory_does_not_grow_with_prompts(pipe):
    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.run import sample_latents

    sizes = []
    with StatsObserver(pipe.unet) as observer:
        for i, prompt in enumerate(PROMPTS[:2]):
            sample_latents(pipe, prompt, i, steps=STEPS, guidance=7.5, seed=0)
            sizes.append(sum(t.numel() for d in (observer.mins, observer.maxs) for t in d.values()))
    assert sizes[0] == sizes[1] > 0


def test_recipes_are_byte_identical_for_the_same_inputs(pipe, one_run, tmp_path):
    from dgq_compiler.config import preset
    from dgq_compiler.quantize import quantize_stats
    from dgq_compiler.recipe import Recipe

    one_run.save(tmp_path / "stats.json")
    loaded = CalibrationStats.load(tmp_path / "stats.json")
    for name, stats in (("a", one_run), ("b", loaded)):
        recipe, summary = quantize_stats(stats, preset("dgq-w4a6-g16"), pipe.unet)
        recipe.save(tmp_path / f"{name}.json")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert _manifest(tmp_path / "a.json") == _manifest(tmp_path / "b.json")
    recipe = Recipe.load(tmp_path / "a.json", unet_config=pipe.unet.config)
    assert recipe.timesteps == one_run.timesteps and recipe.T == STEPS
    assert {tq.axis for tq in recipe.tensors.values()} >= {"channel", "out_channel"}
    assert all(tq.groups in (16, 1) or tq.axis != "channel" for tq in recipe.tensors.values())


def test_prompt_files_and_shards(tmp_path):
    assert len(read_prompts()) == 64
    (tmp_path / "p.txt").write_text("one\n\n  two  \n")
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DgqError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(DgqError, match="not found"):
        read_prompts(tmp_path / "missing.txt")
    assert [shard_indices(10, (i, 3)) for i in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(DgqError, match="shard"):
        shard_indices(10, (3, 3))


def test_stats_files_are_validated(one_run, tmp_path):
    path = one_run.save(tmp_path / "s.json")
    arrays = tmp_path / "s.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:1000])
    with pytest.raises(DgqError, match="sha256"):
        CalibrationStats.load(path)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 2}))
    with pytest.raises(DgqError, match="version 2"):
        CalibrationStats.load(path)


def test_cli_calibrate_merge_quantize(tmp_path, capsys):
    from dgq_compiler.cli.main import main
    from dgq_compiler.recipe import Recipe

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    common = ["--prompts", str(prompts), "--steps", "2", "--device", "cpu"]
    assert main(["calibrate", "tiny", "-o", str(tmp_path / "s0.json"), "--shard", "0/2", *common]) == 0
    assert main(["calibrate", "tiny", "-o", str(tmp_path / "s1.json"), "--shard", "1/2", *common]) == 0
    assert main(["merge-stats", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"),
                 "-o", str(tmp_path / "s.json")]) == 0
    assert main(["quantize", str(tmp_path / "s.json"), "-o", str(tmp_path / "r.json"),
                 "--preset", "tfmq-w8a8"]) == 0
    out = capsys.readouterr().out
    assert "timesteps (T)" in out and "activations by tensor" in out
    recipe = Recipe.load(tmp_path / "r.json")
    assert recipe.config.method == "tfmq" and recipe.T == 2
    assert main(["quantize", str(tmp_path / "s.json"), "-o", str(tmp_path / "r.json")]) == 2  # exists
    assert main(["quantize", str(tmp_path / "s.json"), "-o", str(tmp_path / "r2.json"), "--preset", "dgq-w3a3"]) == 2
    assert main(["calibrate", "tiny", "-o", str(tmp_path / "x.json"), "--shard", "2of3"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "unknown preset" in err and "--shard" in err
    assert not (tmp_path / "r2.json").exists() and not (tmp_path / "x.json").exists()


def test_statistics_of_another_model_are_refused(one_run):
    from dgq_compiler.config import preset
    from dgq_compiler.quantize import quantize_stats
    from models.zoo import unet_from_config, zoo_config

    other = unet_from_config({**zoo_config("tiny"), "block_out_channels": [32, 64, 128]}, device="meta")
    with pytest.raises(DgqError, match="another model"):
        quantize_stats(one_run, preset("dgq-w8a8-g8"), other)


def _reference_arrays(calls_partials, timesteps):
    """Per-step elementwise min/max of per-call partials {(module, role): [(stat, min or None, max)]}."""
    order = list(dict.fromkeys(timesteps))
    out = {}
    for partials, t in zip(calls_partials, timesteps):
        step = order.index(t)
        for (module, role), parts in partials.items():
            for stat, lo, hi in parts:
                for suffix, value, reduce in (("_min", lo, np.minimum), ("_max", hi, np.maximum)):
                    if value is None:
                        continue
                    name = f"{module}/{role}/{stat}" + ("" if lo is None else suffix)
                    value = value.detach().float().numpy()
                    if name not in out:
                        out[name] = np.full((len(order), *value.shape), np.nan, dtype=np.float32)
                    current = out[name][step]
                    out[name][step] = value if np.isnan(current).all() else reduce(current, value)
    return out


def test_observer_matches_the_reference_definition_exactly(pipe):
    """The observer's fast path (fills into preallocated slots, aliases, reused and sliced attention buffers) gives
    bit for bit the per-call partials of the reference definition, folded per step, and leaves the UNet's output
    bitwise unchanged."""
    import torch

    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention
    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.points import quantizable_layers

    unet = pipe.unet
    gen = torch.Generator().manual_seed(3)
    timesteps = [981, 961, 981, 941]  # step 0 twice: its statistics fold over two calls
    calls = [(torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 32, generator=gen)) for _ in timesteps]

    current = {}

    class ReferenceTap(PassThroughTap):
        def qkv(self, name, role, tensor, cross):
            current[(name, role)] = tensor_partials(role, tensor, cross)
            return tensor

        def attend(self, name, probs, value, cross):
            parts = [("key_max", None, probs.amax(dim=1).amax(dim=0))]
            if cross:
                mass = probs[..., 0].mean().reshape(1)
                parts.append(("bos_mass", mass, mass))
            current[(name, "attn_probs")] = parts
            return super().attend(name, probs, value, cross)

    def input_hook(name):
        def hook(_module, args):
            current[(name, "input")] = tensor_partials("input", args[0], False)
        return hook

    reference_calls, reference_out = [], []
    handles = [m.register_forward_pre_hook(input_hook(n)) for n, m in quantizable_layers(unet).items()]
    try:
        with torch.no_grad(), tapped_attention(unet, ReferenceTap()):
            for (sample, context), t in zip(calls, timesteps):
                current = {}
                reference_out.append(unet(sample, torch.tensor(float(t)), context, return_dict=False)[0])
                reference_calls.append(current)
    finally:
        for h in handles:
            h.remove()
    expected = _reference_arrays(reference_calls, timesteps)

    with torch.no_grad(), StatsObserver(unet) as observer:
        outs = [unet(sample, torch.tensor(float(t)), context, return_dict=False)[0]
                for (sample, context), t in zip(calls, timesteps)]
        assert observer._attention.scratch.flat, "the observer runs attention on reused buffers"
    got = observer.arrays()
    assert observer.timesteps == [981, 961, 941]
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == np.float32 and got[name].tobytes() == array.tobytes(), name
    for a, b in zip(outs, reference_out):
        assert torch.equal(a, b)


class _SharedInputToy:
    """A module whose two layers read one tensor object, or (share=False) different tensors."""

    @staticmethod
    def build():
        import torch

        class Toy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
                self.share, self.width = True, 4

            def forward(self, x, timestep):
                return self.a(x) + self.b(x if self.share else x * 2 - 1)

        return Toy()


def test_observer_follows_a_layer_that_stops_sharing_its_input_and_refuses_a_new_layout():
    import torch

    from dgq_compiler.calibrate.observer import StatsObserver

    toy = _SharedInputToy.build()
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 4, generator=gen) * (i + 1) for i in range(5)]
    timesteps, shares = [5, 4, 5, 4, 5], [True, True, False, False, True]
    with torch.no_grad(), StatsObserver(toy) as observer:
        for x, t, share in zip(xs, timesteps, shares):
            toy.share = share
            toy(x, torch.tensor(float(t)))
        got = observer.arrays()
        with pytest.raises(DgqError, match="changed between calls"):
            toy(torch.randn(2, 3, 4), torch.tensor(5.0))
    calls = []
    for x, share in zip(xs, shares):
        second = x if share else x * 2 - 1
        calls.append({("a", "input"): tensor_partials("input", x, False),
                      ("b", "input"): tensor_partials("input", second, False)})
    expected = _reference_arrays(calls, timesteps)
    assert sorted(got) == sorted(expected) == ["a/input/channel_max", "a/input/channel_min",
                                               "b/input/channel_max", "b/input/channel_min"]
    for name, array in expected.items():
        assert got[name].tobytes() == array.tobytes(), name
    assert not np.array_equal(got["a/input/channel_min"], got["b/input/channel_min"])


def test_reused_and_sliced_attention_buffers_give_bitwise_the_same_unet_output(pipe):
    import torch

    from dgq_compiler.calibrate.attention import PassThroughTap, tapped_attention

    class SlicedTap(PassThroughTap):
        slices = 0

        def attend_rows(self, name, cross, shape):
            return 3  # uneven: the last slice is shorter

        def attend_slice(self, name, probs, value, cross, start, total, out):
            SlicedTap.slices += 1
            torch.bmm(probs, value, out=out)

    unet = pipe.unet
    gen = torch.Generator().manual_seed(5)
    sample, context = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 32, generator=gen)
    outs = []
    with torch.no_grad():
        for tap, reuse in ((PassThroughTap(), False), (PassThroughTap(), True), (SlicedTap(), True)):
            with tapped_attention(unet, tap, reuse_buffers=reuse) as tapped:
                outs.append(unet(sample, torch.tensor(500.0), context, return_dict=False)[0])
                assert bool(tapped.scratch and tapped.scratch.flat) == reuse
            assert not tapped.saved and (tapped.scratch is None or not tapped.scratch.flat)
    assert SlicedTap.slices == 14 * 6  # every attention: 16 batch*head rows in slices of 3
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # the default processors are back
    assert all(type(m.processor).__name__ != "TapAttnProcessor" for m in unet.modules() if hasattr(m, "processor"))


def test_observer_leaves_every_layer_as_it_found_it(pipe):
    """Inputs are observed by wrapping each layer's forward: on exit the class forward is back, a forward the
    instance already had (accelerate's offload hooks set one) is restored, and the UNet computes the same."""
    import torch

    from dgq_compiler.calibrate.observer import StatsObserver
    from dgq_compiler.calibrate.points import quantizable_layers

    unet = pipe.unet
    layers = quantizable_layers(unet)
    name, special = next(iter(layers.items()))
    own_calls = []

    def own_forward(x, *args, **kwargs):
        own_calls.append(1)
        return type(special).forward(special, x, *args, **kwargs)
    special.forward = own_forward
    gen = torch.Generator().manual_seed(3)
    sample, context = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 77, 32, generator=gen)
    try:
        with torch.no_grad():
            before = unet(sample, torch.tensor(500.0), context, return_dict=False)[0]
            with StatsObserver(unet) as observer:
                unet(sample, torch.tensor(500.0), context, return_dict=False)
                assert all("forward" in m.__dict__ for m in layers.values())
            after = unet(sample, torch.tensor(500.0), context, return_dict=False)[0]
        assert (name, "input") in observer.points and len(own_calls) == 3  # still its own forward inside
        assert special.__dict__["forward"] is own_forward
        assert not [n for n, m in layers.items() if m is not special and "forward" in m.__dict__]
        assert torch.equal(before, after)
    finally:
        del special.forward


def test_tap_processor_signature_as_diffusers_reads_it():
    """diffusers filters cross_attention_kwargs by inspect.signature(processor.__call__) on every call: the
    precomputed answer must name the same parameters as the method that actually runs."""
    import inspect

    from dgq_compiler.calibrate.attention import PassThroughTap, TapAttnProcessor

    processor = TapAttnProcessor("x", PassThroughTap())
    real = list(inspect.signature(TapAttnProcessor.__call__).parameters)[1:]  # without self
    assert list(inspect.signature(processor.__call__).parameters) == real
    assert inspect.signature(processor.__call__) is inspect.signature(TapAttnProcessor("y", PassThroughTap()).__call__)


def test_step_callback_ticks_once_per_denoising_step_and_changes_nothing(pipe):
    """calibrate's progress bar ticks per step (a real-size prompt takes minutes on a CPU): the callback
    sample_latents installs fires once per denoising step and leaves the latents bit for bit as they were."""
    from dgq_compiler.calibrate.run import sample_latents, use_scheduler

    use_scheduler(pipe, "pndm")
    plain = sample_latents(pipe, PROMPTS[0], 0, steps=STEPS, guidance=7.5, seed=3)
    ticks = []
    ticked = sample_latents(pipe, PROMPTS[0], 0, steps=STEPS, guidance=7.5, seed=3, on_step=lambda: ticks.append(1))
    assert len(ticks) == len(pipe.scheduler.timesteps) >= STEPS  # PNDM repeats one timestep: STEPS + 1 calls
    assert np.array_equal(plain.numpy(), ticked.numpy())
