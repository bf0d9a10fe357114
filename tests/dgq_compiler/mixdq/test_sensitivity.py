"""Metric-decoupled sensitivity on the tiny pipeline: classes, normalisation, widths, file round trip."""
from __future__ import annotations

import json

import pytest

from dgq_compiler.config import preset
from dgq_compiler.errors import DgqError
from dgq_compiler.mixdq.sensitivity import SensitivityTable, measure, record_calls, text_carrying

PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def tiny():
    from dgq_compiler.calibrate.run import calibrate
    from models.tiny_pipeline import build_tiny_pipeline

    pipe = build_tiny_pipeline(0)
    return pipe, calibrate(pipe, PROMPTS, model_name="tiny", steps=2, seed=1)


@pytest.fixture(scope="module")
def table(tiny):
    pipe, stats = tiny
    calls = record_calls(pipe, PROMPTS[:1], [0], steps=2, guidance=7.5, count=2)
    assert len(calls) == 2 and calls[0].step == 0 and calls[1].step > 0  # the first and the last call
    return measure(pipe, stats, preset("mixdq-w5a8"), calls, prompts=1, inputs=True)


def test_text_carrying_layers_are_scored_on_alignment_each_class_on_its_own(table):
    classes = {layer.module: layer.metric for layer in table.layers}
    assert {m for m, c in classes.items() if c == "alignment"} == {m for m in classes if text_carrying(m)}
    assert any(m.endswith("attn2.to_k") for m in classes) and not text_carrying("down_blocks.0.attentions.0."
                                                                                 "transformer_blocks.0.attn1.to_k")
    for cls in ("content", "alignment"):  # normalised: the class's narrow-width total is 1
        members = [layer for layer in table.layers if layer.metric == cls]
        assert sum(layer.weight["4"] + layer.act["6"] for layer in members) == pytest.approx(1.0)
        # the raw errors are the class's metric, divided by one normaliser
        for layer in members:
            assert layer.weight["4"] == pytest.approx(layer.raw["w4"][cls] / table.normaliser[cls])


def test_narrow_widths_hurt_more_than_wide_ones(table):
    w4 = sum(layer.weight["4"] for layer in table.layers)
    w8 = sum(layer.weight["8"] for layer in table.layers)
    a6 = sum(layer.act["6"] for layer in table.layers)
    a8 = sum(layer.act["8"] for layer in table.layers)
    assert w8 < w4 / 10 and a8 < a6
    assert all(layer.params > 0 and layer.macs > 0 for layer in table.layers)


def test_table_round_trips_and_bad_tables_are_refused(table, tmp_path):
    path = table.save(tmp_path / "s.json")
    assert SensitivityTable.load(path) == table
    path.write_text(path.read_text().replace('"metric": "content"', '"metric": "style"', 1))
    with pytest.raises(DgqError, match="metric content|alignment"):
        SensitivityTable.load(path)
    with pytest.raises(DgqError, match="not found"):
        SensitivityTable.load(tmp_path / "missing.json")


def test_dgq_run_stage_allocates_within_budget_and_shares_the_weight_table(tiny, tmp_path):
    from types import SimpleNamespace

    from dgq_compiler.mixdq.compose import recipe_for_run

    pipe, stats = tiny
    options = SimpleNamespace(prompts=None, steps=2, guidance=7.5, seed=0, latent_size=None)
    recipe = recipe_for_run("mixdq-w5a8", preset("mixdq-w5a8"), stats, pipe, tmp_path, options)
    table_path = tmp_path / "mixdq" / "sensitivity-weights-mse.json"
    allocation = json.loads((tmp_path / "mixdq" / "allocation-mixdq-w5a8.json").read_text())
    assert allocation["achieved"]["weight_bits"] <= 5.0 + 1e-9
    weights = {m: tq.bits for (m, r), tq in recipe.tensors.items() if r == "weight"}
    assert set(weights.values()) == {4, 8}
    assert all(weights[m] == w["weight_bits"] for m, w in allocation["layers"].items())
    stamp = table_path.stat().st_mtime_ns
    grouped = recipe_for_run("dgq-mixdq-w5a8-g8", preset("dgq-mixdq-w5a8-g8"), stats, pipe, tmp_path, options)
    assert table_path.stat().st_mtime_ns == stamp  # the weight table is measured once per weight quantizer
    assert {tq.bits for (m, r), tq in grouped.tensors.items() if r == "weight"} == {4, 8}
    assert any(tq.groups > 1 for (m, r), tq in grouped.tensors.items() if r == "input")
