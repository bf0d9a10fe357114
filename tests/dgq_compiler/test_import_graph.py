"""dgq compile on a UNet graph exported the way optimum-cli exports it (no dgq module map beside it).

optimum cannot be installed next to our transformers 5, so the graph is made as its exporter makes it: the
UNet's own forward patched to return the sample (no wrapper module, so scopes start at `/down_blocks.0/...`),
diffusers' default attention (scaled_dot_product_attention, decomposed by torch with the scale on both operands),
opset 14, input/output names sample, timestep (a scalar), encoder_hidden_states -> out_sample.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dgq_compiler.compile import compile_graph
from dgq_compiler.config import preset
from tests.random_recipes import random_recipe
from passes.module_map import build_module_map, load_module_map


@pytest.fixture(scope="module")
def optimum_unet(tmp_path_factory, tiny_pipeline_dir):
    import torch

    from models.loader import load_unet

    unet = load_unet(tiny_pipeline_dir).eval()
    original = unet.forward

    def forward(sample, timestep, encoder_hidden_states):
        return original(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    unet.forward = forward
    folder = tmp_path_factory.mktemp("optimum") / "sd-onnx"
    (folder / "unet").mkdir(parents=True)
    args = (torch.randn(2, 4, 16, 16), torch.tensor(500.0), torch.randn(2, 77, 32))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(unet, args, str(folder / "unet" / "model.onnx"), opset_version=14, dynamo=False,
                          input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "batch_size", 2: "height", 3: "width"},
                                        "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                                        "out_sample": {0: "batch_size", 2: "height", 3: "width"}})
    return folder


def test_compile_accepts_an_optimum_unet_graph(optimum_unet, tiny_export_dir, tiny_pipeline_dir, tmp_path):
    model = onnx.load(str(optimum_unet / "unet" / "model.onnx"))
    assert not any(n.name.startswith("/unet/") for n in model.graph.node)  # optimum's scopes, not our wrapper's
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset("dgq-w8a8-g8"), (901, 501, 101), seed=0, model_name="tiny")
    out = tmp_path / "compiled"
    # the pipeline folder as optimum writes it; compile's own checks include the fake-quant point check
    report = compile_graph(optimum_unet, recipe, out, progress=lambda _m: None)
    assert sum(row[-1] for row in report.tensors) == len(recipe.tensors)  # every recipe tensor found its node
    assert report.point_check and report.worst_mismatch[0] <= report.tolerance
    compiled = onnx.load(str(out / "unet.onnx"))
    assert next(o.version for o in compiled.opset_import if o.domain == "") == 21
    # the module map built from optimum's scopes names the same modules as our own export's map
    ours = sorted((e.module, e.kind) for e in load_module_map(tiny_export_dir / "module_map.json"))
    assert sorted((e.module, e.kind) for e in build_module_map(model)) == ours
    # SDPA's operand scales were moved behind QK^T: q and k reach it through layout ops only
    producers = {o: n for n in compiled.graph.node for o in n.output}
    qk = [n for n in compiled.graph.node if n.name.endswith("attn1/MatMul")]
    assert qk and all(producers[i].op_type != "Mul" for n in qk for i in n.input)
    # and it runs in a default session with the scalar timestep optimum feeds
    feed = {"sample": np.ones((2, 4, 16, 16), np.float32), "timestep": np.array(501.0, np.float32),
            "encoder_hidden_states": np.full((2, 77, 32), 0.1, np.float32)}
    got = ort.InferenceSession(str(out / "unet.onnx")).run(None, feed)[0]
    assert got.shape == (2, 4, 16, 16) and np.all(np.isfinite(got))


def test_a_graph_without_timestep_is_refused(tmp_path, tiny_pipeline_dir):
    from onnx import TensorProto, helper

    from dgq_compiler.errors import DgqError

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/relu/Relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    config = json.loads((tiny_pipeline_dir / "unet" / "config.json").read_text())
    recipe = random_recipe(config, preset("dgq-w8a8-g8"), (901, 501, 101), seed=0, model_name="tiny")
    with pytest.raises(DgqError, match="no 'timestep' input"):
        compile_graph(tmp_path, recipe, tmp_path / "out", progress=lambda _m: None)
    assert not (tmp_path / "out").exists()
