"""dgq compile --target onnxruntime-cpu + dgq verify on lowered graphs: the int32 accumulators of every lowered op
in a default onnxruntime session equal the simulator's integer kernels bit for bit, on the tiny and the embedded
trained model; a one-unit change to one weight is caught at that op and only there."""
from __future__ import annotations

import json
import shutil

import onnx
import pytest
from onnx import numpy_helper

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from dgq_compiler.errors import DgqError
from dgq_compiler.recipe import random_recipe
from dgq_compiler.verify_lowering import verify_lowered

TIMESTEPS = (901, 501, 101)


def _compile(export_dir, pipeline_dir, out, name, seed=0):
    config = json.loads((pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset(name), TIMESTEPS, seed=seed, model_name="m")
    return compile_graph(export_dir, recipe, out, target="onnxruntime-cpu", validate=False,
                         progress=lambda _m: None), recipe


@pytest.fixture(scope="module")
def lowered(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    out = tmp_path_factory.mktemp("lowered") / "w4a8"
    report, recipe = _compile(tiny_export_dir, tiny_pipeline_dir, out, "dgq-w4a8-g8")
    return out, report, recipe


def test_lowered_tiny_graph_is_exact_and_reports_its_kernels(lowered):
    out, report, recipe = lowered
    model = onnx.load(str(out / "unet.onnx"))
    ops = [n.op_type for n in model.graph.node]
    rows = json.loads((out / "lowering.json").read_text())
    conv_linear = {(m, r) for m, r in recipe.tensors if r == "input"}
    assert {r["module"] for r in rows} == {m for m, _ in conv_linear}       # every quantized Conv/Linear lowered
    assert ops.count("Conv") == 2 and "Gemm" not in ops                     # conv_in and conv_out stay FP
    assert ops.count("MatMulInteger") == sum(r["accumulators"] for r in rows)
    assert {p.key: p.value for p in model.metadata_props}["dgq.lowered"] == "onnxruntime-cpu"
    assert sum(k[1] for k in report.kernels) == len(rows) and report.target == "onnxruntime-cpu"
    result = verify_lowered(out, timesteps=[901, 101], batch=2)
    assert result.exact and len(result.ops) == len(rows)
    assert all(o.elements > 0 and o.codes > 0 for o in result.ops)


def test_a_changed_weight_is_caught_at_its_op_only(lowered, tmp_path):
    out, _report, _recipe = lowered
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    model = onnx.load(str(bad / "unet.onnx"))
    rows = json.loads((bad / "lowering.json").read_text())
    victim = next(r for r in rows if r["axis"] == "tensor" or r["accumulators"] == 1)
    init = next(t for t in model.graph.initializer if t.name == victim["weight"])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] = w.flat[0] - 1 if w.flat[0] > -128 else 1
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(bad / "unet.onnx"))
    result = verify_lowered(bad, timesteps=[501], batch=1)
    wrong = {o.module for o in result.ops if o.mismatches}
    assert wrong == {victim["module"]} and not result.exact


def test_verify_lowered_needs_its_reports(lowered, tmp_path):
    out, _report, _recipe = lowered
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "lowering.json").unlink()
    with pytest.raises(DgqError, match="lowering report"):
        verify_lowered(partial)


def test_lowered_embedded_model_is_exact(tmp_path):
    from dgq_compiler.export import export_unet
    from models.loader import load_unet
    from models.trained import trained_pipeline_dir

    export_unet(load_unet(trained_pipeline_dir()), tmp_path / "export", model_name="shapes-sd",
                progress=lambda _m: None)
    out = tmp_path / "w8a8"
    report, _recipe = _compile(tmp_path / "export", trained_pipeline_dir(), out, "dgq-w8a8-g8", seed=1)
    result = verify_lowered(out, timesteps=[901], batch=2)
    assert result.exact and len(result.ops) == sum(k[1] for k in report.kernels) > 50


def test_compile_refuses_an_unknown_target_and_static_lowering(tiny_export_dir, tiny_pipeline_dir, tmp_path):
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset("tfmq-w8a8"), TIMESTEPS, model_name="m")
    with pytest.raises(DgqError, match="not supported"):
        compile_graph(tiny_export_dir, recipe, tmp_path / "a", target="gpu", progress=lambda _m: None)
    with pytest.raises(DgqError, match="cannot be combined"):
        compile_graph(tiny_export_dir, recipe, tmp_path / "b", target="onnxruntime-cpu", static=True,
                      progress=lambda _m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
