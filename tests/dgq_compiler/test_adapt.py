"""Compiling for a target: the recipe adapted (ranges kept, representation coarsened), what it gave up, and a
tensorrt-int8 compile whose every graph `dgq check --target tensorrt-int8` passes with zero violations."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from dgq_compiler.adapt import adapt_recipe
from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from simulator.check import check_graph
from tests.random_recipes import random_recipe

TIMESTEPS = (901, 501, 101)


def _recipe(tiny_pipeline_dir, name):
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    return random_recipe(config, preset(name), TIMESTEPS, seed=0, model_name="tiny")


def _range(tq):
    levels = 2 ** tq.bits - 1
    return -tq.zero_point * tq.scale, (levels - tq.zero_point) * tq.scale


def test_tensorrt_adaptation_keeps_every_calibrated_range_on_a_symmetric_per_tensor_grid(tiny_pipeline_dir):
    recipe = _recipe(tiny_pipeline_dir, "dgq-w4a6-g16")
    adapted, gave_up = adapt_recipe(recipe, "tensorrt-int8")
    rules = {g.what: g for g in gave_up}
    assert set(rules) == {"<start> token", "activation bits", "activation groups", "activation zero points",
                          "attention probabilities", "scale source", "weight bits", "weight zero points"}
    assert rules["weight bits"].tensors == sum(1 for _m, r in recipe.tensors if r == "weight")
    for key, tq in recipe.tensors.items():
        new = adapted.tensors[key]
        assert new.bits == 8 and not new.exclude_bos
        if tq.role == "weight":
            assert not np.any(new.zero_point)
            half = 2 ** (tq.bits - 1)
            old_lo, old_hi = (-half - tq.zero_point) * tq.scale, (half - 1 - tq.zero_point) * tq.scale
            assert np.all(127 * new.scale >= np.maximum(-old_lo, old_hi) * (1 - 1e-6))
            continue
        assert new.quantizer == "uniform" and new.axis == "tensor" and new.group_map is None
        assert np.all(new.zero_point == 128)  # the signed symmetric grid
        if tq.quantizer == "log2":
            np.testing.assert_allclose(new.scale, 1 / 127)
            continue
        lo, hi = _range(tq)
        reach = 127 * new.scale[:, 0]
        assert np.all(reach >= np.maximum(-lo.min(axis=1), hi.max(axis=1)) * (1 - 1e-6))  # nothing newly clipped
        assert np.all(reach <= np.maximum(-lo.min(axis=1), hi.max(axis=1)) * (1 + 1e-6))  # and no wider


def test_a_target_that_takes_dgq_gives_nothing_up(tiny_pipeline_dir):
    recipe = _recipe(tiny_pipeline_dir, "dgq-w8a8-g8")
    adapted, gave_up = adapt_recipe(recipe, "generic-npu")
    assert gave_up == [] and adapted.tensors == recipe.tensors


@pytest.fixture(scope="module")
def trt_compiled(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    out = tmp_path_factory.mktemp("trt") / "dgq-w8a8-g8"
    report = compile_graph(tiny_export_dir, _recipe(tiny_pipeline_dir, "dgq-w8a8-g8"), out, target="tensorrt-int8",
                           progress=lambda _m: None)
    return out, report


def test_tensorrt_compile_passes_check_with_zero_violations(trt_compiled):
    out, report = trt_compiled
    assert report.target == "tensorrt-int8" and report.static_graphs == [f"unet.step{i:02d}.onnx" for i in range(3)]
    rate, lsb = report.worst_mismatch  # the adapted recipe is what the graph computes
    assert report.point_check and rate == 0 and lsb == 0
    for name in report.static_graphs:
        check = check_graph(str(out / name), "tensorrt-int8", latent_size=16)
        assert check.violations == [], (name, check.by_rule())
        codes = [n for n in onnx.load(str(out / name), load_external_data=False).graph.node
                 if n.op_type == "QuantizeLinear"]
        assert codes and not any(n.op_type in ("QuantizeLog", "Clip") for n in onnx.load(
            str(out / name), load_external_data=False).graph.node)
    # the dynamic graph gathers its scales per step: exactly what this target refuses, and only that
    dynamic = check_graph(str(out / "unet.onnx"), "tensorrt-int8", latent_size=16)
    assert set(dynamic.by_rule()) == {"activation scale source"}
    # and the un-adapted compile of the same recipe is far from conforming
    rows = {row[0] for row in report.gave_up}
    assert {"activation groups", "attention probabilities", "<start> token"} <= rows


def test_check_cli_checks_every_static_graph_of_a_target_compile(trt_compiled, capsys):
    from dgq_compiler.cli.main import main

    out, _report = trt_compiled
    assert main(["check", str(out), "--target", "tensorrt-int8"]) == 0
    text = capsys.readouterr().out
    assert "3 static graphs" in text and "conforms" in text
    assert main(["check", str(out / "unet.onnx"), "--target", "tensorrt-int8"]) == 1  # the dynamic graph alone
