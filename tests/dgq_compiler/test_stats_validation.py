"""Statistics files are validated field by field and array by array: garbage is refused on load and never
written (a swapped min/max gives scales of 1e-8; a NaN guidance writes invalid JSON)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dgq_compiler.calibrate.points import QuantPoint
from dgq_compiler.calibrate.stats import CalibrationStats
from dgq_compiler.errors import DgqError
from dgq_compiler.run import RunOptions


def _stats(**arrays) -> CalibrationStats:
    point = QuantPoint("down.conv", "input", "nchw", 4, 16)
    base = {"down.conv/input/channel_min": -np.ones((2, 4)), "down.conv/input/channel_max": np.ones((2, 4)),
            "down.conv/input/pixel_min": -np.ones((2, 16)), "down.conv/input/pixel_max": np.ones((2, 16))}
    base.update(arrays)
    return CalibrationStats("tiny", "0" * 64, (500, 1), (4, 4), {"guidance": 7.5, "steps": 2}, (0,), (point,),
                            {k: np.asarray(v, np.float32) for k, v in base.items()})


def test_good_statistics_round_trip(tmp_path):
    path = _stats().save(tmp_path / "s.json")
    assert CalibrationStats.load(path).timesteps == (500, 1)


@pytest.mark.parametrize("arrays, words", [
    ({"down.conv/input/channel_min": np.full((2, 4), 2.0)}, "expected min <= max"),
    ({"down.conv/input/pixel_max": np.full((2, 16), np.inf)}, "non-finite"),
    ({"down.conv/input/channel_min": np.full((2, 4), np.nan)}, "non-finite"),
])
def test_garbage_arrays_are_never_written(tmp_path, arrays, words):
    with pytest.raises(DgqError, match=words):
        _stats(**arrays).save(tmp_path / "s.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value, words", [
    ("resolution", "16x16", "'resolution' must be"), ("sampling", "x", "'sampling' must be"),
    ("timesteps", [500, -1], "'timesteps' must be"), ("timesteps", "961", "'timesteps' must be"),
    ("prompt_indices", [0, 0], "'prompt_indices'"), ("arrays_sha256", None, "'arrays_sha256'"),
    ("points", [{"module": "m"}], "'points'"), ("model", {"name": ""}, "'model'"),
])
def test_malformed_manifest_fields_are_named(tmp_path, field, value, words):
    path = _stats().save(tmp_path / "s.json")
    doc = json.loads(path.read_text())
    if value is None:
        doc.pop(field)
    else:
        doc[field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(DgqError, match=words):
        CalibrationStats.load(path)


def test_nan_guidance_is_not_a_run_option():
    for guidance in (float("nan"), float("inf"), 1.0):
        with pytest.raises(DgqError, match="--guidance must be a finite number > 1"):
            RunOptions(model="tiny", guidance=guidance)


def test_guidance_defaults_to_the_models_own():
    from dgq_compiler.calibrate.run import DEFAULT_GUIDANCE
    from models.trained import SHAPES_GUIDANCE

    assert SHAPES_GUIDANCE != DEFAULT_GUIDANCE
    assert RunOptions().guidance == SHAPES_GUIDANCE              # the embedded model samples at its own scale
    assert RunOptions(model="tiny").guidance == DEFAULT_GUIDANCE  # every other model at SD's 7.5
    assert RunOptions(model="tiny", guidance=4.0).guidance == 4.0


def test_a_shapes_model_given_by_its_folder_gets_its_guidance_and_prompts(tmp_path):
    """A shapes model in another folder (e.g. retrained) is told by its tokenizer, not by the name 'embedded'."""
    import shutil

    from dgq_compiler.run import default_prompt_files
    from models.trained import SHAPES_GUIDANCE, trained_pipeline_dir

    copy = tmp_path / "retrained"
    shutil.copytree(trained_pipeline_dir() / "tokenizer", copy / "tokenizer")
    assert RunOptions(model=str(copy)).guidance == SHAPES_GUIDANCE
    assert default_prompt_files(str(copy))[1].endswith("shapes_heldout.txt")
    vocab = copy / "tokenizer" / "vocab.json"
    vocab.write_text(vocab.read_text().replace('"red', '"rouge'))  # another vocabulary: not a shapes model
    assert RunOptions(model=str(copy)).guidance != SHAPES_GUIDANCE
    assert default_prompt_files(str(copy)) == (None, None)
