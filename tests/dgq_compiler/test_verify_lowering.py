"""dgq compile --target onnxruntime-cpu + dgq verify on lowered graphs: the int32 accumulators of every lowered op
in a default onnxruntime session equal the simulator's integer kernels bit for bit, on the tiny and the embedded
trained model; a broken formulation (zero-point correction row, channel permutation) is caught at that op only."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from dgq_compiler.errors import DgqError
from tests.random_recipes import random_recipe
from dgq_compiler.verify.lowering import verify_lowered
from simulator.errors import SimulatorError

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
    # one product per op (channel groups batched), except pixel groups on a kxk conv: one per kernel tap
    assert ops.count("MatMulInteger") == sum(1 if "batched" in r["kernel"] else r["accumulators"] for r in rows)
    assert {p.key: p.value for p in model.metadata_props}["dgq.lowered"] == "onnxruntime-cpu"
    assert sum(k[1] for k in report.kernels) == len(rows) and report.target == "onnxruntime-cpu"
    result = verify_lowered(out, timesteps=[901, 101], batch=2)
    assert result.exact and len(result.ops) == len(rows)
    assert all(o.elements > 0 and o.codes > 0 for o in result.ops)


@pytest.fixture()
def small_lowered(tmp_path):
    """A three-layer graph (3x3 conv with pixel groups, token-grouped MatMul, channel-grouped Gemm) lowered into a
    folder the way dgq compile writes one: unet.onnx, lowering.json, encodings.json, compile.json."""
    import importlib.util
    from pathlib import Path

    helpers = Path(__file__).parents[1] / "passes" / "conftest.py"  # the tiny-graph builders of the pass tests
    spec = importlib.util.spec_from_file_location("passes_conftest", helpers)
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    from passes.lower_pipeline import lowering_passes

    recipe = tg.make_recipe([
        tg.uniform_entry("down.conv", "input", axis="pixel", n=16, groups=3, seed=1), tg.weight_entry("down.conv", 6),
        tg.uniform_entry("proj", "input", axis="pixel", n=16, groups=3, seed=2), tg.weight_entry("proj", 8),
        tg.uniform_entry("time", "input", axis="channel", n=6, groups=2, seed=3), tg.weight_entry("time", 5)])
    model, ctx = tg.compile_model(tg.layers_model(), recipe, lowering_passes())
    model.metadata_props.add(key="dgq.lowered", value="onnxruntime-cpu")
    onnx.save(model, str(tmp_path / "unet.onnx"))
    for name, text in ctx.artifacts.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "compile.json").write_text(json.dumps({"resolution": [4, 4]}))
    return tmp_path


def _corrupt(model, name, change):
    init = next(t for t in model.graph.initializer if t.name == name)
    values = numpy_helper.to_array(init).copy()
    change(values)
    init.CopyFrom(numpy_helper.from_array(values, init.name))


def test_small_lowered_graph_is_exact_and_a_broken_formulation_is_caught_at_its_op_only(small_lowered):
    """The reference reads the graph's integer weights, so what it checks is the formulation: a wrong zero-point
    correction row (per-row / per-tap products) or a wrong channel permutation (split-K) shows up at that op."""
    result = verify_lowered(small_lowered, timesteps=[900, 500, 100], batch=1)
    assert result.exact and {o.module for o in result.ops} == {"down.conv", "proj", "time"}
    model = onnx.load(str(small_lowered / "unet.onnx"))
    rows = {r["module"]: r for r in json.loads((small_lowered / "lowering.json").read_text())}

    def last_row_plus_one(w):
        w[-1] = np.where(w[-1] < 127, w[-1] + 1, w[-1] - 1)

    def swap_groups(perm):   # exchange two channels of different groups in every step's permutation
        perm[:, [0, -1]] = perm[:, [-1, 0]]
    corruptions = {"down.conv": (rows["down.conv"]["weight"], last_row_plus_one),
                   "proj": (rows["proj"]["weight"], last_row_plus_one),
                   "time": ("dgq/time/lower/perm_table", swap_groups)}
    for module, (name, change) in corruptions.items():
        bad = onnx.ModelProto()
        bad.CopyFrom(model)
        _corrupt(bad, name, change)
        onnx.save(bad, str(small_lowered / "unet.onnx"))
        result = verify_lowered(small_lowered, timesteps=[500], batch=1)
        assert {o.module for o in result.ops if o.mismatches} == {module} and not result.exact
    onnx.save(model, str(small_lowered / "unet.onnx"))


def test_verify_lowered_needs_its_reports(small_lowered):
    (small_lowered / "lowering.json").unlink()
    with pytest.raises(DgqError, match="lowering report"):
        verify_lowered(small_lowered)


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
    with pytest.raises((DgqError, SimulatorError), match="'gpu'"):
        compile_graph(tiny_export_dir, recipe, tmp_path / "a", target="gpu", progress=lambda _m: None)
    with pytest.raises(DgqError, match="cannot be combined"):
        compile_graph(tiny_export_dir, recipe, tmp_path / "b", target="onnxruntime-cpu", static=True,
                      progress=lambda _m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_verify_of_a_lowered_graph_runs_the_integer_comparison(lowered, capsys):
    from dgq_compiler.cli.main import main

    out, _report, _recipe = lowered
    assert main(["verify", str(out), "--target", "onnxruntime-cpu", "--timesteps", "101"]) == 0
    assert "EXACT" in capsys.readouterr().out
    assert main(["verify", str(out), "--target", "generic-npu"]) == 2
    assert "verify it with --target onnxruntime-cpu" in capsys.readouterr().err


def test_check_reads_a_lowered_graph_products_quantizers_and_weights(small_lowered, tmp_path):
    """`dgq check` on an integer-lowered graph: every MatMulInteger is a quantized product with its input's
    quantizer (the recipe's grouping and bits, found through the permutation / im2col / zero-point columns) and its
    weight initializer; onnxruntime-cpu accepts it, a per-tensor target and a 16-bit accumulator do not."""
    from simulator.check import check_graph
    from simulator.graph_info import Quantizer, WeightQuant

    model = onnx.load(str(small_lowered / "unet.onnx"))
    products = [n.name for n in model.graph.node if n.op_type == "MatMulInteger"]
    report = check_graph(small_lowered / "unet.onnx", "onnxruntime-cpu")
    assert report.ok and sorted(m.node for m in report.info.matmuls) == sorted(products)
    for mm in report.info.matmuls:
        q, w = mm.operands
        assert isinstance(q, Quantizer) and isinstance(w, WeightQuant) and w.bits == 8 and mm.reduction
        assert (q.module, q.role, q.steps) == (mm.node.split("/")[1], "input", 3)
        assert (q.axis, q.groups, q.per_step_maps) == ({"time": "channel"}.get(q.module, "pixel"),
                                                       2 if q.module == "time" else 3, True)
    rules = check_graph(small_lowered / "unet.onnx", "tensorrt-int8").by_rule()
    assert rules["activation granularity"] == 3 and rules["weight zero point"] == len(products)
    from pathlib import Path
    preset = Path(__file__).parents[2] / "simulator" / "targets" / "presets" / "onnxruntime-cpu.json"
    narrow = json.loads(preset.read_text())
    narrow.update(name="narrow-accumulator", accumulator_bits=16)
    (tmp_path / "narrow.json").write_text(json.dumps(narrow))
    narrowed = check_graph(small_lowered / "unet.onnx", str(tmp_path / "narrow.json"))
    assert narrowed.by_rule().get("accumulator width") == len(products)
