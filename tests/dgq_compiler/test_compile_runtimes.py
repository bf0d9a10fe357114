"""Compiled tiny-UNet graphs in the runtimes users have: a default onnxruntime session (no options) and
`onnx.reference`, with `timestep` of length 1 or of length batch, dynamic and static graphs.

DGQ W8A8 G8 is the configuration a default session used to refuse (per-channel activation zero points fused into
MatMulIntegerToFloat); TFMQ W8A8 is per-tensor, whose products should keep onnxruntime's integer fusion.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from dgq_compiler.runtime import example_feeds
from tests.random_recipes import random_recipe

TIMESTEPS = (901, 501, 101)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "Clip", "QuantizeLog", "DequantizeLog"}


@pytest.fixture(scope="module", params=["dgq-w8a8-g8", "tfmq-w8a8"])
def compiled(request, tmp_path_factory, tiny_export_dir, tiny_pipeline_dir):
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset(request.param), TIMESTEPS, seed=0, model_name="tiny")
    out = tmp_path_factory.mktemp("runtimes") / request.param
    compile_graph(tiny_export_dir, recipe, out, static=True, progress=lambda _m: None, validate=False)
    return request.param, out


def _session(path, level=None, optimized=None):
    options = ort.SessionOptions()
    if level is not None:
        options.graph_optimization_level = level
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feed(path, batch=2, timestep=501.0):
    return example_feeds(onnx.load(str(path), load_external_data=False), 16, batch=batch, timestep=timestep)


@pytest.mark.parametrize("graph", ["unet.onnx", "unet.step01.onnx"])
def test_default_session_runs_with_timestep_of_length_one_or_batch(compiled, graph, tmp_path):
    name, out = compiled
    path = out / graph
    declared = onnx.load(str(path), load_external_data=False).graph.input[1]
    assert declared.name == "timestep" and declared.type.tensor_type.shape.dim[0].dim_param  # 1-D, dynamic
    feed = _feed(path)
    session = ort.InferenceSession(str(path))  # exactly how a user opens it: no options
    one = session.run(None, feed)[0]
    feed["timestep"] = np.full([2], 501.0, np.float32)
    np.testing.assert_array_equal(session.run(None, feed)[0], one)
    assert one.shape == (2, 4, 16, 16) and np.all(np.isfinite(one))
    if graph != "unet.onnx":
        return
    # every quantization fusion a default session applies keeps the graph's arithmetic: with all of them
    # (extended level: everything but the NCHWc conv layout, whose float sums differ in the last bits) the
    # output equals the graph as written
    written = _session(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, feed)[0]
    fused = _session(path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, tmp_path / "opt.onnx").run(None, feed)[0]
    np.testing.assert_allclose(fused, written, rtol=0, atol=1e-5 * float(np.abs(written).max()))
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx"), load_external_data=False).graph.node}
    assert "MatMulNBits" not in kinds
    assert ("MatMulIntegerToFloat" in kinds) == name.startswith("tfmq")  # per-tensor products stay integer


def _node_model(model, node, values):
    inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype), None)
              for i in node.input if i]
    graph = helper.make_graph([node], "one", inputs, [helper.make_tensor_value_info(o, 0, None) for o in node.output])
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version,
                             functions=model.functions)


def test_onnx_reference_runs_it_with_the_same_quantizers(compiled):
    """onnx.reference runs the whole graph; node by node, fed onnxruntime's inputs, every quantizer, clip and
    log-quantizer function gives exactly onnxruntime's codes and values (float ops may differ in the last bit,
    which is why whole-graph outputs are compared node by node)."""
    from onnx.reference import ReferenceEvaluator

    _name, out = compiled
    path = out / "unet.onnx"
    model = onnx.load(str(path))
    feed = _feed(path)
    feed["timestep"] = np.full([2], 501.0, np.float32)
    whole = ReferenceEvaluator(model).run(None, feed)[0]
    assert whole.shape == (2, 4, 16, 16) and np.all(np.isfinite(whole))
    probe = onnx.load(str(path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    quant = [n for n in model.graph.node if n.op_type in QUANT_OPS]
    wanted = sorted({t for n in quant for t in list(n.input) + list(n.output) if t in types})
    probe.graph.output.extend(helper.make_tensor_value_info(t, types[t], None) for t in wanted)
    session = _session_from_proto(probe)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    values.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, **feed)
    checked = set()
    for node in quant:
        if not all(i in values for i in node.input if i) or not all(o in values for o in node.output):
            continue
        got = ReferenceEvaluator(_node_model(model, node, values)).run(None, {i: values[i] for i in node.input if i})
        for o, g in zip(node.output, got):
            np.testing.assert_array_equal(np.asarray(g), values[o], err_msg=node.name)
        checked.add(node.op_type)
    assert checked >= {"QuantizeLinear", "DequantizeLinear", "Clip"} - ({"Clip"} if "a8" in _name else set())
    assert len(quant) > 100


def _session_from_proto(model):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
