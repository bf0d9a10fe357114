"""Calibration runs on the tiny pipeline: exact shard merging, bounded memory, deterministic recipes, CLI."""
import json

import numpy as np
import pytest

from dgq_compiler.calibrate.run import calibrate, read_prompts, shard_indices
from dgq_compiler.calibrate.stats import CalibrationStats, merge_stats
from dgq_compiler.errors import DgqError

PROMPTS = ["a red bicycle leaning against a wall", "two cats on a sofa", "a bowl of fruit"]
STEPS = 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's intra-op threads only add hand-off cost (and stall on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
