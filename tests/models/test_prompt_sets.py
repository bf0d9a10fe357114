"""The rephrased prompt set: every prompt parses back to the scene it was written from, in forms training never uses."""
import re

import numpy as np
import pytest

from models import ModelError
from models import prompt_sets as ps
from models import shapes_dataset as ds


def test_the_shipped_file_is_what_the_generator_writes(tmp_path):
    assert ps.main(["write", str(tmp_path)]) == 0
    assert (tmp_path / ps.PROMPT_FILES["rephrased"]).read_text() == ps.prompt_file("rephrased").read_text()


def test_every_rephrased_prompt_parses_back_to_its_scene():
    scenes, lines = ps.rephrased_scenes(), ps.rephrased_lines()
    assert len(lines) == ps.REPHRASED_PROMPTS == len(set(lines))
    for scene, line in zip(scenes, lines):
        assert ps.parse_prompt(line) == scene.__dict__, line
    assert {s.count for s in scenes} == set(ds.COUNTS)
    assert len({(s.shape, s.colour) for s in scenes}) >= 10


def test_count_words_override_the_singular_default_and_training_captions_parse_as_before():
    assert ps.parse_prompt("a pair of red circles")["count"] == "two"
    assert ps.parse_prompt("3 blue squares")["count"] == "three"
    assert ps.parse_prompt("a single green cross")["count"] == "one"
    assert ps.parse_prompt("big yellow triangles at the top, 2 in total")["count"] == "two"
    rng = np.random.default_rng(3)
    for scene in [ds.sample_scene(rng, heldout=None) for _ in range(50)]:
        text = ds.caption(scene, rng)
        assert ps.parse_prompt(text) == ds.parse_caption(text) == scene.__dict__, text


def test_rephrased_forms_are_ones_training_captions_never_use():
    training_words = set(ds.vocabulary())
    rng = np.random.default_rng(0)
    captions = {ds.caption(ds.sample_scene(rng, heldout=None), rng, omit_probability=0.1) for _ in range(3000)}
    for line in ps.rephrased_lines():
        assert line not in captions
        new_words = set(re.findall(r"[a-z]+|[0-9]+", line)) - training_words
        assert new_words, f"{line!r} uses only training words"
        count_words = [w for w in re.findall(r"[a-z]+|[0-9]+", line) if w in ps.NEW_COUNT_WORDS]
        assert count_words, f"{line!r} states its count the training way"
        assert not {"one", "two", "three"} & set(re.findall(r"[a-z]+", line))


def test_both_sets_load_with_what_each_prompt_asks_for():
    heldout, rephrased = ps.load_prompt_set("heldout"), ps.load_prompt_set("rephrased")
    assert len(heldout.prompts) == len(heldout.asked) == 32
    assert all(set(a) == set(ds.ATTRIBUTES) for a in heldout.asked + rephrased.asked)
    assert all((a["shape"], a["colour"]) in ds.HELDOUT_PAIRS for a in heldout.asked)
    with pytest.raises(ModelError, match="unknown prompt set 'parti'"):
        ps.load_prompt_set("parti")
