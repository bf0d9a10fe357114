"""dgq compile on the tiny export: checker, onnxruntime, FP signature, fake-quant equality, sizes, bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from dgq_compiler.compile import DEFAULT_TOLERANCE, compile_graph, graph_signature
from dgq_compiler.config import preset
from dgq_compiler.errors import user_errors
from tests.random_recipes import random_recipe
from dgq_compiler.runtime import example_feeds as example_feed
from dgq_compiler.runtime import session

TIMESTEPS = (901, 501, 101)


def _config(tiny_pipeline_dir):
    return json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())


def _recipe(tiny_pipeline_dir, name="dgq-w8a8-g8", seed=0, timesteps=TIMESTEPS, **changes):
    config = preset(name).replace(**changes) if changes else preset(name)
    return random_recipe(_config(tiny_pipeline_dir), config, timesteps, seed=seed, model_name="tiny")


def _session(path):
    return session(path, "reference")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    """W4A6 G8 with per-step maps, static variants: the heaviest combination, compiled once."""
    recipe = _recipe(tiny_pipeline_dir, "dgq-w4a6-g8")
    out = tmp_path_factory.mktemp("compiled") / "w4a6"
    report = compile_graph(tiny_export_dir, recipe, out, static=True, progress=lambda _m: None)
    return out, report, recipe


def test_compiled_graph_checks_runs_and_keeps_the_fp_signature(compiled, tiny_export_dir):
    out, report, recipe = compiled
    graph = out / "unet.onnx"
    onnx.checker.check_model(str(graph), full_check=True)
    model = onnx.load(str(graph))
    fp = onnx.load(str(tiny_export_dir / "unet.onnx"), load_external_data=False)
    assert graph_signature(model) == graph_signature(fp)
    assert {p.key: p.value for p in model.metadata_props}["dgq.timesteps"] == json.dumps(list(TIMESTEPS))
    # every recipe tensor is quantized exactly once, and every Q node carries its name tags
    assert sum(row[-1] for row in report.tensors) == len(recipe.tensors)
    q_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "QuantizeLog")]
    assert len(q_nodes) == sum(1 for _m, r in recipe.tensors if r != "weight")
    tags = {(p.key, p.value) for n in q_nodes for p in n.metadata_props}
    assert ("dgq.role", "attn_probs") in tags and ("dgq.bits", "6") in tags
    enc = json.loads((out / "encodings.json").read_text())
    assert len(enc["activations"]) + len(enc["weights"]) == len(recipe.tensors)
    feed = example_feed(model, recipe.resolution, batch=2, timestep=501.0)
    got = _session(graph).run(None, feed)[0]
    assert got.shape == (2, 4, 16, 16) and np.all(np.isfinite(got))


def test_static_variants_share_one_weights_file_and_equal_the_dynamic_graph(compiled):
    out, report, recipe = compiled
    assert report.static_graphs == [f"unet.step{i:02d}.onnx" for i in range(len(TIMESTEPS))]
    dynamic = _session(out / "unet.onnx")
    header = onnx.load(str(out / "unet.onnx"), load_external_data=False)
    for step, t in enumerate(TIMESTEPS):
        static = onnx.load(str(out / report.static_graphs[step]), load_external_data=False)
        files = {e.value for i in static.graph.initializer for e in i.external_data if e.key == "location"}
        assert files == {"unet.onnx.data"}
        assert not any(n.op_type == "ArgMin" for n in static.graph.node)
        feed = example_feed(header, recipe.resolution, batch=1, seed=step, timestep=float(t))
        np.testing.assert_array_equal(_session(out / report.static_graphs[step]).run(None, feed)[0],
                                      dynamic.run(None, feed)[0])


@pytest.mark.parametrize("name", ["dgq-w4a6-g4-shared", "tfmq-w8a8"])  # (dgq-w4a6-g8, w8a6-g4: checked below)
def test_every_point_equals_torch_fake_quant_at_every_calibrated_step(tmp_path, tiny_export_dir, tiny_pipeline_dir,
                                                                       name):
    from models.loader import load_unet
    recipe = _recipe(tiny_pipeline_dir, name, seed=3)
    report = compile_graph(tiny_export_dir, recipe, tmp_path / "out", reference_unet=load_unet(tiny_pipeline_dir),
                           progress=lambda _m: None)
    assert sorted(report.point_check) == sorted(report.reference_error) == sorted(str(t) for t in TIMESTEPS)
    rate, lsb = report.worst_mismatch
    assert rate <= DEFAULT_TOLERANCE and lsb <= 1.0
    # end to end, one early boundary flip propagates; still far below the quantization effect itself
    assert report.worst_error < 0.5 * report.fp_difference


def test_point_check_catches_a_graph_that_quantizes_differently(tmp_path, tiny_export_dir, tiny_pipeline_dir):
    from dgq_compiler.verify.fakequant import point_errors
    recipe = _recipe(tiny_pipeline_dir, "dgq-w8a8-g8", seed=4)
    compile_graph(tiny_export_dir, recipe, tmp_path / "out", validate=False, check_points=False,
                  progress=lambda _m: None)
    graph = tmp_path / "out" / "unet.onnx"
    model = onnx.load(str(graph))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.name.startswith("dgq/"))
    bump = onnx.helper.make_node("Mul", [dq.input[1], "bump"], ["bumped_scale"], name="tamper")
    dq.input[1] = "bumped_scale"  # dequantize with a scale 1% off
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.01, np.float32), "bump"))
    model.graph.node.insert(list(model.graph.node).index(dq), bump)
    onnx.save(model, str(graph))
    results = point_errors(graph, recipe)
    assert max(v["mismatch_rate"] for v in results.values()) > DEFAULT_TOLERANCE


def _initializer_bytes(model, fp_names):
    quantized = fp = other = 0
    for t in model.graph.initializer:
        n = len(t.raw_data) if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).nbytes
        if t.name.endswith("_quantized"):
            quantized += n
        elif t.name in fp_names:
            fp += n
        else:
            other += n
    return quantized, fp, other


@pytest.mark.parametrize("name,bits", [("dgq-w8a8-g8", "W8A8"), ("dgq-w4a8-g8", "W4A8")])
def test_weights_on_disk_match_the_cost_model_size(tmp_path, tiny_export_dir, tiny_pipeline_dir, name, bits):
    recipe = _recipe(tiny_pipeline_dir, name)
    compile_graph(tiny_export_dir, recipe, tmp_path / "out", validate=False, progress=lambda _m: None)
    model = onnx.load(str(tmp_path / "out" / "unet.onnx"))
    fp_names = {t.name for t in onnx.load(str(tiny_export_dir / "unet.onnx")).graph.initializer}
    quantized, fp, _ = _initializer_bytes(model, fp_names)
    try:
        from simulator.cost.bits import parse_bits
        from simulator.cost.macs_from_config import inventory_from_config
        from simulator.cost.size import size_report
        predicted = size_report(inventory_from_config(_config(tiny_pipeline_dir)), parse_bits(bits), 8, 3)
        want = predicted.model_size_bytes
    except ImportError:  # no cost model: count the weights ourselves
        import torch  # noqa: F401
        from models.loader import load_unet
        unet = load_unet(tiny_pipeline_dir)
        b = int(bits[1])
        weights = sum(m.weight.numel() for n, m in unet.named_modules()
                      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and n not in ("conv_in", "conv_out"))
        want = weights * b / 8 + (sum(p.numel() for p in unet.parameters()) - weights) * 4
    assert abs((quantized + fp) - want) / want < 0.05


def _no_output(path):
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temp dirs left


def test_recipe_for_another_model_is_refused(tmp_path, tiny_export_dir, tiny_pipeline_dir):
    other = dict(_config(tiny_pipeline_dir), block_out_channels=[16, 32, 32])
    recipe = random_recipe(other, preset("dgq-w8a8-g8"), TIMESTEPS, model_name="other")
    with pytest.raises(user_errors(), match=r"check_recipe.*(recipe for another model)"):
        compile_graph(tiny_export_dir, recipe, tmp_path / "out", progress=lambda _m: None)
    _no_output(tmp_path / "out")


def test_graph_without_the_attention_pattern_is_refused(tmp_path, tiny_export_dir, tiny_pipeline_dir):
    broken = tmp_path / "export"
    shutil.copytree(tiny_export_dir, broken)
    model = onnx.load(str(broken / "unet.onnx"))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax" and "attn2" in n.name)
    softmax.op_type = "LogSoftmax"  # no longer MatMul -> Softmax -> MatMul
    onnx.save(model, str(broken / "unet.onnx"))
    with pytest.raises(user_errors(), match=r"attention .*attn2.*reaches LogSoftmax"):
        compile_graph(broken, _recipe(tiny_pipeline_dir), tmp_path / "out", progress=lambda _m: None)
    _no_output(tmp_path / "out")


def test_step_count_mismatch_is_refused(tmp_path, compiled, tiny_pipeline_dir):
    out, _, _ = compiled
    again = tmp_path / "compiled"
    again.mkdir()
    for name in ("unet.onnx", "unet.onnx.data"):
        shutil.copy(out / name, again / name)
    shutil.copy(_module_map(out), again / "module_map.json")
    recipe = _recipe(tiny_pipeline_dir, timesteps=(801, 401))
    with pytest.raises(user_errors(), match=r"schedule 'dgq.schedule' has 3 steps; the recipe has 2"):
        compile_graph(again, recipe, tmp_path / "out", progress=lambda _m: None)
    _no_output(tmp_path / "out")


def _module_map(compiled_out):
    report = json.loads((compiled_out / "compile.json").read_text())
    return (compiled_out / report["graph"]).parent / "module_map.json"  # the graph path is relative to compile.json


def test_cli_compiles_and_reports_errors_in_one_line(tmp_path, tiny_export_dir, tiny_pipeline_dir, capsys):
    from dgq_compiler.cli.main import main
    recipe_path = _recipe(tiny_pipeline_dir, "dgq-w8a6-g4").save(tmp_path / "recipe.json")
    code = main(["compile", str(tiny_export_dir), "--recipe", str(recipe_path), "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0 and (tmp_path / "out" / "unet.onnx").is_file() and (tmp_path / "out" / "encodings.json").is_file()
    assert "quantized tensors" in printed and "tolerance 0.0001" in printed and "size on disk" in printed
    assert "passed at 3 steps" in printed
    code = main(["compile", str(tiny_export_dir), "--recipe", str(recipe_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code = main(["compile", str(tmp_path), "--recipe", str(recipe_path), "-o", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert code == 2 and "no UNet graph" in err and not (tmp_path / "out2").exists()


def test_options_come_as_a_record_or_as_keywords_not_both(tmp_path):
    from dgq_compiler.compile import CompileOptions

    with pytest.raises(TypeError, match="not both"):
        compile_graph(tmp_path, "recipe.json", tmp_path / "out", CompileOptions(), static=True)
    with pytest.raises(TypeError):
        compile_graph(tmp_path, "recipe.json", tmp_path / "out", stattic=True)  # a misspelt option is no option
    assert not (tmp_path / "out").exists()
