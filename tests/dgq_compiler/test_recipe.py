"""The recipe file format and its validation (the recipe contract)."""
import json

import numpy as np
import pytest

from dgq_compiler.config import preset
from dgq_compiler.errors import DgqError
from dgq_compiler.recipe import Recipe, TensorQuant, config_fingerprint
from tests.random_recipes import random_recipe
from models.zoo import unet_from_config, zoo_config

TIMESTEPS = (961, 921, 881, 841)


@pytest.fixture(scope="module")
def tiny_meta_unet():
    return unet_from_config(zoo_config("tiny"), device="meta")


@pytest.fixture(scope="module")
def recipe(tiny_meta_unet):
    return random_recipe(tiny_meta_unet, preset("dgq-w4a6-g8"), TIMESTEPS, seed=3)


def test_random_recipe_covers_every_point_with_contract_shapes(recipe, tiny_meta_unet):
    layers = {n for n, m in tiny_meta_unet.named_modules() if type(m).__name__ in ("Conv2d", "Linear")}
    assert {m for m, r in recipe.tensors if r == "weight"} == layers - {"conv_in", "conv_out"}
    attn = {m for m, r in recipe.tensors if r == "attn_probs"}
    assert attn and all((m, r) in recipe.tensors for m in attn for r in ("q", "k", "v"))
    axes = {tq.axis for (m, r), tq in recipe.tensors.items() if r not in ("weight", "attn_probs")}
    assert axes == {"channel", "pixel"}
    for (module, role), tq in recipe.tensors.items():
        if role == "weight":
            assert tq.scale.shape == (dict(tiny_meta_unet.named_modules())[module].weight.shape[0],)
            assert tq.bits == 4 and tq.zero_point.min() >= -8 and tq.zero_point.max() <= 7
        elif role == "attn_probs":
            assert tq.quantizer == "log2" and tq.scale.shape == (4, 1) and tq.dynamic
            assert tq.exclude_bos == module.endswith("attn2")
        else:
            assert tq.scale.shape[0] == 4 and tq.group_map.shape[0] == 4
            assert tq.group_map.max() < tq.groups
        if role in ("k", "v") and module.endswith("attn2") and tq.axis == "pixel":
            assert tq.group_map.shape[1] == 76 and tq.exclude_bos
    recipe.check_unet(tiny_meta_unet)


def test_save_load_round_trip_is_exact_and_deterministic(recipe, tiny_meta_unet, tmp_path):
    path = recipe.save(tmp_path / "a.json")
    loaded = Recipe.load(path, unet_config=dict(tiny_meta_unet.config))
    assert loaded == recipe
    assert loaded.timesteps == TIMESTEPS and loaded.config == preset("dgq-w4a6-g8")
    again = random_recipe(tiny_meta_unet, preset("dgq-w4a6-g8"), TIMESTEPS, seed=3)
    again.save(tmp_path / "b.json")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["tensors"] == json.loads((tmp_path / "b.json").read_text())["tensors"]
    other = random_recipe(tiny_meta_unet, preset("dgq-w4a6-g8"), TIMESTEPS, seed=4)
    assert other != recipe


def test_nothing_is_overwritten_without_permission(recipe, tmp_path):
    recipe.save(tmp_path / "r.json")
    with pytest.raises(DgqError, match="already exists"):
        recipe.save(tmp_path / "r.json")
    recipe.save(tmp_path / "r.json", overwrite=True)


def test_load_names_what_is_wrong(recipe, tmp_path):
    path = recipe.save(tmp_path / "r.json")
    arrays = tmp_path / "r.safetensors"
    data = arrays.read_bytes()
    arrays.write_bytes(data[: len(data) // 2])
    with pytest.raises(DgqError, match="sha256"):
        Recipe.load(path)
    arrays.unlink()
    with pytest.raises(DgqError, match="arrays file .* is missing"):
        Recipe.load(path)
    arrays.write_bytes(data)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(DgqError, match="version 99"):
        Recipe.load(path)
    path.write_text(json.dumps({**doc, "format": "something"}))
    with pytest.raises(DgqError, match="not a dgq recipe"):
        Recipe.load(path)
    path.write_text(json.dumps(doc)[:100])
    with pytest.raises(DgqError, match="not valid JSON"):
        Recipe.load(path)
    with pytest.raises(DgqError, match="not found"):
        Recipe.load(tmp_path / "nope.json")
    path.write_text(json.dumps(doc))
    with pytest.raises(DgqError, match="another model"):
        Recipe.load(path, unet_config=zoo_config("sd-v1.4"))


def test_fingerprint_ignores_private_keys_and_filled_defaults(tiny_meta_unet):
    bare = zoo_config("tiny")
    assert config_fingerprint(bare) == config_fingerprint(tiny_meta_unet.config)
    assert config_fingerprint({**bare, "_diffusers_version": "0.1"}) == config_fingerprint(bare)
    assert config_fingerprint({**bare, "sample_size": 32}) != config_fingerprint(bare)


def test_step_index_is_the_nearest_timestep_ties_to_the_lower_index(recipe):
    assert [recipe.step_index(t) for t in (999, 961, 942, 941, 940, 901, 0)] == [0, 0, 0, 0, 1, 1, 3]


@pytest.mark.parametrize("changes, words", [
    ({"group_map": np.full((2, 5), 3)}, "group map indices"),
    ({"zero_point": np.full((2, 2), 300)}, "zero points"),
    ({"scale": np.zeros((2, 2))}, "positive"),
    ({"axis": "tensor"}, "G = 1"),
    ({"quantizer": "log2"}, "attention probabilities only"),
    ({"bits": 2}, "bits"),
    ({"group_map": np.zeros((3, 5))}, "rows"),
])
def test_tensor_entries_are_validated(changes, words):
    good = dict(module="m", role="input", quantizer="uniform", bits=8, axis="channel", scale=np.ones((2, 2)),
                zero_point=np.zeros((2, 2)), group_map=np.zeros((2, 5)))
    TensorQuant(**good)
    with pytest.raises(DgqError, match=words):
        TensorQuant(**{**good, **changes})


def test_recipe_checks_tables_against_the_schedule(recipe):
    tq = next(tq for tq in recipe.tensors.values() if tq.role == "q")
    with pytest.raises(DgqError, match="expected T = 3"):
        Recipe("m", "x", recipe.config, (3, 2, 1), (16, 16), {(tq.module, tq.role): tq})
    with pytest.raises(DgqError, match="distinct"):
        Recipe("m", "x", recipe.config, (3, 3, 2, 1), (16, 16), {})
