"""The procedural shapes dataset: deterministic, labels true to the pixels, captions true to the labels."""
from __future__ import annotations

import re

import numpy as np
import pytest

from models import shapes_dataset as ds


def _foreground(image_chw: np.ndarray, scene: ds.Scene) -> np.ndarray:
    """Pixels closer to the object colour than to the background colour."""
    rgb = (image_chw.transpose(1, 2, 0) + 1) / 2 * 255
    fg, bg = np.array(ds.RGB[scene.colour]), np.array(ds.RGB[scene.background])
    return np.linalg.norm(rgb - fg, axis=-1) < np.linalg.norm(rgb - bg, axis=-1)


def _components(mask: np.ndarray) -> int:
    """4-connected components of a boolean mask (small flood fill; no scipy needed)."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_same_seed_same_batch_and_other_seed_differs():
    a = ds.render_batch(np.random.default_rng(3), 16, omit_probability=0.1)
    b = ds.render_batch(np.random.default_rng(3), 16, omit_probability=0.1)
    c = ds.render_batch(np.random.default_rng(4), 16, omit_probability=0.1)
    assert a.images.tobytes() == b.images.tobytes() and a.captions == b.captions
    assert a.images.shape == (16, 3, 32, 32) and a.images.min() >= -1 and a.images.max() <= 1
    assert a.captions != c.captions


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_match_the_pixels(seed):
    batch = ds.render_batch(np.random.default_rng(seed), 48, heldout=None)
    for image, scene in zip(batch.images, batch.scenes):
        mask = _foreground(image, scene)
        assert _components(mask) == ds.COUNTS.index(scene.count) + 1, scene
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
        expected = {"left": cx < 14, "right": cx > 18, "top": cy < 14, "bottom": cy > 18,
                    "center": 12 < cy < 20}[scene.position]
        assert expected, (scene, cx, cy)
        if scene.count == "one":  # one object: its extent is its size
            extent = max(np.ptp(xs), np.ptp(ys)) + 1
            assert (extent <= 7) if scene.size == "small" else (extent >= 9), (scene, extent)


def test_shapes_differ_in_fill_ratio():
    """Same size, different shape -> different share of the bounding box filled (the shape is drawn)."""
    rng = np.random.default_rng(0)
    ratios = {}
    for shape in ds.SHAPES:
        scene = ds.Scene(shape, "red", "large", "center", "one", "white")
        mask = _foreground(ds.batch_of([scene], rng).images[0], scene)
        ys, xs = np.nonzero(mask)
        ratios[shape] = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    assert ratios["square"] > 0.9 and ratios["circle"] > 0.7
    assert ratios["triangle"] < 0.65 and ratios["cross"] < 0.65


def test_captions_parse_back_to_the_labels():
    rng = np.random.default_rng(0)
    vocabulary = set(ds.vocabulary())
    for _ in range(300):
        scene = ds.sample_scene(rng, heldout=None)
        text = ds.caption(scene, rng, omit_probability=0.3)
        assert set(re.findall(r"[a-z]+", text)) <= vocabulary, text
        parsed = ds.parse_caption(text)
        assert {"shape", "colour", "count"} <= parsed.keys(), text
        assert all(getattr(scene, k) == v for k, v in parsed.items()), (text, scene)
        full = ds.parse_caption(ds.caption(scene, rng))
        assert full == {k: getattr(scene, k) for k in ds.ATTRIBUTES}


def test_identity_omission_drops_colour_or_shape_words_alone_and_costs_no_draws_when_off():
    rng = np.random.default_rng(1)
    scenes = [ds.sample_scene(rng, heldout=None) for _ in range(400)]
    texts = [ds.caption(s, np.random.default_rng(i), omit_identity_probability=0.3) for i, s in enumerate(scenes)]
    parsed = [ds.parse_caption(t) for t in texts]
    without_colour = sum("colour" not in p for p in parsed) / len(parsed)
    without_shape = sum("shape" not in p for p in parsed) / len(parsed)
    assert 0.2 < without_colour < 0.4 and 0.2 < without_shape < 0.4, (without_colour, without_shape)
    for scene, text, found in zip(scenes, texts, parsed):
        assert all(getattr(scene, k) == v for k, v in found.items()), (text, scene)  # what is said stays true
        assert {"size", "position", "background"} <= found.keys(), text  # only colour and shape go
        assert "  " not in text and not text.endswith(" "), text
    # Off (the default) it draws nothing, so captions are what they were: the shipped prompt files still
    # regenerate byte for byte (next test).


def test_training_never_sees_heldout_pairs_and_prompt_files_are_regenerable(tmp_path):
    rng = np.random.default_rng(0)
    assert not any(ds.is_heldout(ds.sample_scene(rng, heldout=False)) for _ in range(2000))
    assert all(ds.is_heldout(ds.sample_scene(rng, heldout=True)) for _ in range(50))
    ds.write_prompt_files(tmp_path)
    from models.trained import shapes_prompts_file

    for name in ("shapes_heldout.txt", "shapes_calibration.txt"):
        assert (tmp_path / name).read_bytes() == shapes_prompts_file(name).read_bytes(), name
    heldout = shapes_prompts_file("shapes_heldout.txt").read_text().splitlines()
    calibration = shapes_prompts_file("shapes_calibration.txt").read_text().splitlines()
    assert len(heldout) == 32 and len(calibration) == 64
    assert all((ds.parse_caption(p)["shape"], ds.parse_caption(p)["colour"]) in ds.HELDOUT_PAIRS for p in heldout)
    assert not any((ds.parse_caption(p)["shape"], ds.parse_caption(p)["colour"]) in ds.HELDOUT_PAIRS
                   for p in calibration)
